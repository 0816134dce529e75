// The OpenTelemetry Java SDK exporting spans, log records and metrics over OTLP/HTTP (protobuf)
// with the JDK HTTP sender (java.net.http.HttpClient), as a Java service would.
//
//   java -cp '<otel-java libs>/*' OtlpJdkSender.java ENDPOINT SERVICE N [none|gzip]
//
// ENDPOINT is the OTLP/HTTP base URL (http://host:port). Exports N spans (each with one log
// record emitted inside it) and 5 metric points: a counter added N times over 3 routes, a
// histogram of N values, a gauge. The SDK's own batch processors and periodic reader do the
// exporting; every exporter is wrapped in a proxy that counts what the OTLP exporter reported
// as exported. Prints one line, "sent key=value ...", and exits 0 only if every export
// succeeded and everything made was exported exactly once. Exits 3 when the HTTP sender is not
// the JDK one alone (the OkHttp sender on the classpath would be picked instead).

import io.opentelemetry.api.common.AttributeKey;
import io.opentelemetry.api.common.Attributes;
import io.opentelemetry.api.logs.Logger;
import io.opentelemetry.api.logs.Severity;
import io.opentelemetry.api.metrics.DoubleGauge;
import io.opentelemetry.api.metrics.DoubleHistogram;
import io.opentelemetry.api.metrics.LongCounter;
import io.opentelemetry.api.metrics.Meter;
import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.Tracer;
import io.opentelemetry.context.Scope;
import io.opentelemetry.exporter.otlp.http.logs.OtlpHttpLogRecordExporter;
import io.opentelemetry.exporter.otlp.http.metrics.OtlpHttpMetricExporter;
import io.opentelemetry.exporter.otlp.http.trace.OtlpHttpSpanExporter;
import io.opentelemetry.sdk.common.CompletableResultCode;
import io.opentelemetry.sdk.common.export.HttpSenderProvider;
import io.opentelemetry.sdk.logs.SdkLoggerProvider;
import io.opentelemetry.sdk.logs.export.BatchLogRecordProcessor;
import io.opentelemetry.sdk.logs.export.LogRecordExporter;
import io.opentelemetry.sdk.metrics.SdkMeterProvider;
import io.opentelemetry.sdk.metrics.data.MetricData;
import io.opentelemetry.sdk.metrics.export.MetricExporter;
import io.opentelemetry.sdk.metrics.export.PeriodicMetricReader;
import io.opentelemetry.sdk.resources.Resource;
import io.opentelemetry.sdk.trace.SdkTracerProvider;
import io.opentelemetry.sdk.trace.export.BatchSpanProcessor;
import io.opentelemetry.sdk.trace.export.SpanExporter;
import java.lang.reflect.InvocationHandler;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.ServiceLoader;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.ToIntFunction;

public final class OtlpJdkSender {
  private static final String JDK_SENDER =
      "io.opentelemetry.exporter.sender.jdk.internal.JdkHttpSenderProvider";
  private static final AttributeKey<Long> I = AttributeKey.longKey("i");
  private static final AttributeKey<String> ROUTE = AttributeKey.stringKey("route");

  /** What the OTLP exporter reported for the exports of one signal. */
  static final class Tally {
    final AtomicInteger ok = new AtomicInteger();
    final AtomicInteger failedExports = new AtomicInteger();

    void track(int n, CompletableResultCode result) {
      result.whenComplete(
          () -> {
            if (result.isSuccess()) {
              ok.addAndGet(n);
            } else {
              failedExports.incrementAndGet();
              System.err.println("export of " + n + " failed: " + result.getFailureThrowable());
            }
          });
    }
  }

  /**
   * {@code inner} as a {@code type} (SpanExporter, LogRecordExporter, MetricExporter) whose every
   * call is the inner exporter's own; the outcome of each export is counted in {@code tally} for
   * as many items as {@code size} finds in its batch.
   */
  static <E> E counting(Class<E> type, E inner, Tally tally, ToIntFunction<Collection<?>> size) {
    InvocationHandler handler =
        (proxy, method, args) -> {
          Object result;
          try {
            result = method.invoke(inner, args);
          } catch (InvocationTargetException e) {
            throw e.getCause();
          }
          if (method.getName().equals("export")) {
            tally.track(size.applyAsInt((Collection<?>) args[0]), (CompletableResultCode) result);
          }
          return result;
        };
    return type.cast(Proxy.newProxyInstance(type.getClassLoader(), new Class<?>[] {type}, handler));
  }

  private static boolean waitOk(String what, CompletableResultCode result) {
    result.join(30, TimeUnit.SECONDS);
    if (!result.isSuccess()) {
      System.err.println(what + " failed or did not finish within 30 s");
    }
    return result.isSuccess();
  }

  public static void main(String[] args) {
    if (args.length < 3) {
      System.err.println("usage: OtlpJdkSender ENDPOINT SERVICE N [none|gzip]");
      System.exit(2);
    }
    String endpoint = args[0].replaceAll("/+$", "");
    String service = args[1];
    int n = Integer.parseInt(args[2]);
    String compression = args.length > 3 ? args[3] : "none";

    List<String> senders = new ArrayList<>();
    ServiceLoader.load(HttpSenderProvider.class).forEach(p -> senders.add(p.getClass().getName()));
    if (!senders.equals(List.of(JDK_SENDER))) {
      System.err.println("the HTTP sender providers are " + senders + ", not the JDK one alone");
      System.exit(3);
    }

    Duration timeout = Duration.ofSeconds(10);
    Tally spanTally = new Tally();
    Tally logTally = new Tally();
    Tally pointTally = new Tally();
    SpanExporter spanExporter =
        counting(
            SpanExporter.class,
            OtlpHttpSpanExporter.builder()
                .setEndpoint(endpoint + "/v1/traces")
                .setCompression(compression)
                .setTimeout(timeout)
                .build(),
            spanTally,
            Collection::size);
    LogRecordExporter logExporter =
        counting(
            LogRecordExporter.class,
            OtlpHttpLogRecordExporter.builder()
                .setEndpoint(endpoint + "/v1/logs")
                .setCompression(compression)
                .setTimeout(timeout)
                .build(),
            logTally,
            Collection::size);
    MetricExporter metricExporter =
        counting(
            MetricExporter.class,
            OtlpHttpMetricExporter.builder()
                .setEndpoint(endpoint + "/v1/metrics")
                .setCompression(compression)
                .setTimeout(timeout)
                .build(),
            pointTally,
            ms -> ms.stream().mapToInt(m -> ((MetricData) m).getData().getPoints().size()).sum());

    // A forged tenant.id: the gateway owns that attribute and must overwrite it.
    Resource resource =
        Resource.getDefault()
            .merge(
                Resource.create(
                    Attributes.builder()
                        .put("service.name", service)
                        .put("tenant.id", "forged")
                        .build()));
    SdkTracerProvider tracerProvider =
        SdkTracerProvider.builder()
            .setResource(resource)
            .addSpanProcessor(BatchSpanProcessor.builder(spanExporter).setMaxExportBatchSize(64).build())
            .build();
    SdkLoggerProvider loggerProvider =
        SdkLoggerProvider.builder()
            .setResource(resource)
            .addLogRecordProcessor(
                BatchLogRecordProcessor.builder(logExporter).setMaxExportBatchSize(64).build())
            .build();
    // The reader exports when the provider shuts down; its interval is far beyond the run, so that
    // is the only export (a cumulative forceFlush before it would send the same points twice).
    SdkMeterProvider meterProvider =
        SdkMeterProvider.builder()
            .setResource(resource)
            .registerMetricReader(
                PeriodicMetricReader.builder(metricExporter).setInterval(Duration.ofHours(1)).build())
            .build();

    Tracer tracer = tracerProvider.get("otlp-jdk-sender");
    Logger logger = loggerProvider.get("otlp-jdk-sender");
    Meter meter = meterProvider.get("otlp-jdk-sender");
    LongCounter requests = meter.counterBuilder("java.requests").build();
    DoubleHistogram latency = meter.histogramBuilder("java.latency").setUnit("s").build();
    DoubleGauge temperature = meter.gaugeBuilder("java.temperature").build();
    String[] routes = {"/a", "/b", "/c"};

    for (int i = 0; i < n; i++) {
      Span span = tracer.spanBuilder("java-op-" + i).setAttribute(I, (long) i).startSpan();
      try (Scope ignored = span.makeCurrent()) {
        logger
            .logRecordBuilder()
            .setSeverity(Severity.INFO)
            .setBody("java line " + i)
            .setAttribute(I, (long) i)
            .emit();
        requests.add(1, Attributes.of(ROUTE, routes[i % routes.length]));
        latency.record(i / 1000.0);
      } finally {
        span.end();
      }
    }
    temperature.set(21.5);
    int metricPoints = Math.min(n, routes.length) + 2;

    boolean ok = waitOk("trace flush", tracerProvider.forceFlush());
    ok &= waitOk("log flush", loggerProvider.forceFlush());
    ok &= waitOk("trace shutdown", tracerProvider.shutdown());
    ok &= waitOk("log shutdown", loggerProvider.shutdown());
    ok &= waitOk("metric shutdown", meterProvider.shutdown());

    int failed =
        spanTally.failedExports.get() + logTally.failedExports.get() + pointTally.failedExports.get();
    ok &= failed == 0;
    ok &= spanTally.ok.get() == n && logTally.ok.get() == n && pointTally.ok.get() == metricPoints;
    System.out.println(
        "sent spans=" + spanTally.ok.get()
            + " logs=" + logTally.ok.get()
            + " metric_points=" + pointTally.ok.get()
            + " failed_exports=" + failed
            + " sender=" + senders.get(0)
            + " compression=" + compression
            + " java=" + System.getProperty("java.version"));
    System.exit(ok ? 0 : 1);
  }
}

"""Server TLS for the OTLP receivers and the admin port (``server.tls.*``, ``admin.tls.*``).

One certificate source (``CertSource``: certificate, key and, with mTLS, the client CA bundle)
feeds both shapes the servers take:

- OTLP/gRPC: ``grpc_credentials`` gives grpc ``dynamic_ssl_server_credentials``, whose fetcher
  grpc calls at the start of every handshake; it re-reads the files at most every
  ``reload_interval_s`` (``TlsServerConfig.reload_every_s``: 60 s when that is 0 and the
  Collector's ``client_ca_file_reload`` is true) and hands grpc the new pair and client CA when
  they changed.
- OTLP/HTTP and admin: ``HttpTls`` holds the ``ssl.SSLContext`` given to ``create_server``; a
  timer on the event loop re-reads the files every ``reload_interval_s`` and builds a new context
  from a changed set, which that listener context's ``sni_callback`` hands to every new handshake
  (called for each ClientHello, with or without SNI). A fresh context is needed because OpenSSL
  can add CAs to a context's trust store but never drop one, so a rotated-out client CA would
  otherwise stay trusted. Handshakes run on the same loop as the timer, so none sees a half-built
  context.

A new set is only taken after it loads: a certificate and key that match, and a client CA file
holding at least one certificate. While a replacement is half written, or the new file is
broken, the old set stays in service, the failure is logged and counted once
(``gateway_tls_reload_failures_total``, once per change on disk that does not load), the gauge
``gateway_tls_reload_failing`` is 1 until a reload succeeds or the files are back to the set
served, and the reload is retried at the next interval. The Collector's configtls does the same
for the client CA (``clientCAsFileReloader``: a failed reload keeps the previous pool).

One ``CertSource`` per listener: ``server.tls`` feeds both OTLP/gRPC and OTLP/HTTP (built once in
``Receivers.start``), so a change is read, and a failure counted, once. Each consumer remembers
the ``generation`` it built from and rebuilds when the source's moved on.

With ``client_ca_file`` (mTLS) a client must present a certificate that CA signed; one without,
an expired one, or one from another CA is refused in the handshake. The names of a verified
client certificate (subject CN, then its SANs) are what ``auth.client_cert_tenants`` maps to a
tenant: ``grpc_client_names`` and ``http_client_names`` read them from each transport.

The served certificate's notAfter is the gauge ``gateway_tls_certificate_expiry_timestamp_seconds``
(label ``listener``: server or admin), set when a pair is loaded and when a reload takes a new one.

Minimum version: "1.2" or "1.3" for HTTP and admin. grpc-python has no setting for it: its
TLS floor is 1.2 whatever is configured, and a "1.3" there is logged at start.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import metrics
from settings.config import TlsServerConfig

if TYPE_CHECKING:  # grpc is imported in the worker, after any fork
    import grpc

log = logging.getLogger(__name__)

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TlsFileError(OSError):
    """A certificate, key or client CA file that does not load: the message names the setting, the
    file and OpenSSL's reason, never file contents. An ``OSError``, as an unreadable file is, so a
    worker that cannot start on it says so in one line (``gateway.server.run_worker``)."""


class CertSource:
    """The configured certificate, key and client CA files, and whether they changed since last read.

    ``cert_pem``/``key_pem`` are the PEM bytes served; ``client_ca_pem`` the PEM bundle that
    verifies clients (None without ``client_ca_file``). All three are replaced together, and
    only by a set that loads. Raises ``OSError`` at construction if the files do not load: a
    file not readable, or :class:`TlsFileError` naming the setting and file that does not load.
    """

    def __init__(self, cfg: TlsServerConfig, what: str) -> None:
        self.cfg = cfg
        self.what = what  # "server.tls", "admin.tls": named in every log line
        self.listener = what.removesuffix(".tls")  # the metrics' label: server, admin
        self._stamp = self._stat()
        self.cert_pem, self.key_pem, self.client_ca_pem = self._read_checked()
        self.generation = 0  # +1 each time a new set is taken
        self._failed_stamp: tuple[tuple[int, int, int], ...] | None = None
        # gRPC's fetcher runs on grpc's threads, the HTTP timer on the event loop.
        self._lock = threading.Lock()
        self._observe_expiry()
        # Both series exist at 0 from the start, so a gateway with TLS always exposes them and
        # the first failed reload is an increase of the counter.
        metrics.tls_reload_failures.labels(listener=self.listener)
        metrics.tls_reload_failing.labels(listener=self.listener).set(0)

    def _observe_expiry(self) -> None:
        """``gateway_tls_certificate_expiry_timestamp_seconds`` for the pair now served."""
        try:
            expiry = certificate_not_after(self.cert_pem)
        except (ValueError, IndexError) as exc:  # loaded by OpenSSL already: not expected
            log.warning("%s: cannot read the certificate's notAfter (%s)", self.what, exc)
            return
        metrics.tls_certificate_expiry.labels(listener=self.listener).set(expiry)

    def _paths(self) -> tuple[str, ...]:
        cfg = self.cfg
        return (cfg.cert_file, cfg.key_file, cfg.client_ca_file) if cfg.client_ca_file else (
            cfg.cert_file, cfg.key_file)

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        out = []
        for path in self._paths():
            try:
                st = os.stat(path)
            except OSError:  # missing now: a stamp of its own, so it is counted once, not per interval
                out.append((-1, -1, -1))
                continue
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)

    def _read_checked(self) -> tuple[bytes, bytes, bytes | None]:
        """The files' bytes, once the pair loads as a matching certificate and key and the client CA
        file (if any) holds a certificate; else ``OSError`` (a file not readable, naming it) or
        :class:`TlsFileError` naming the setting and file that does not load and why (OpenSSL's
        reason: a key that does not match, a CA file empty, not ASCII or without a certificate)."""
        cfg = self.cfg
        cert, key = Path(cfg.cert_file).read_bytes(), Path(cfg.key_file).read_bytes()
        ca = Path(cfg.client_ca_file).read_bytes() if cfg.client_ca_file else None
        check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            with _PairFiles(cert, key) as (cert_path, key_path):
                check.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise TlsFileError(f"{self.what}.cert_file {cfg.cert_file} with key_file {cfg.key_file}: "
                               f"{_ssl_reason(exc)}") from exc
        if ca is not None:
            try:
                check.load_verify_locations(cadata=ca.decode("ascii"))
            except (ssl.SSLError, ValueError) as exc:
                why = "not ASCII PEM" if isinstance(exc, UnicodeDecodeError) else _ssl_reason(exc)
                raise TlsFileError(f"{self.what}.client_ca_file {cfg.client_ca_file}: {why}") from exc
        return cert, key, ca

    def refresh(self) -> bool:
        """Re-read the files if any changed; True when a new set that loads was taken (then
        ``generation`` is one more). A changed set that does not load is counted in
        ``gateway_tls_reload_failures_total`` once per change (not again while the files stay as
        they are) and sets ``gateway_tls_reload_failing`` to 1; a set that loads, or the files back
        to the set served, set it to 0. Thread-safe."""
        with self._lock:
            return self._refresh()

    def _refresh(self) -> bool:
        listener = self.listener
        stamp = self._stat()
        if stamp == self._stamp:  # as served (or put back as they were)
            self._failed_stamp = None
            metrics.tls_reload_failing.labels(listener=listener).set(0)
            return False
        if stamp == self._failed_stamp:  # the same broken change: failing still, counted already
            return False
        try:
            cert, key, ca = self._read_checked()
        except (OSError, ssl.SSLError, ValueError) as exc:
            # Mid-replacement (one file new, another old) or a bad file: keep serving the old set.
            self._failed_stamp = stamp
            metrics.tls_reload_failures.labels(listener=listener).inc()
            metrics.tls_reload_failing.labels(listener=listener).set(1)
            log.warning("%s: the certificate, key or client CA file changed but does not load (%s: %s); "
                        "still using the previous ones, retrying", self.what, type(exc).__name__,
                        _reason(exc))
            return False
        self._stamp, self._failed_stamp = stamp, None
        metrics.tls_reload_failing.labels(listener=listener).set(0)
        if (cert, key, ca) == (self.cert_pem, self.key_pem, self.client_ca_pem):
            return False
        self.generation += 1
        if (cert, key) != (self.cert_pem, self.key_pem):
            self.cert_pem, self.key_pem = cert, key
            self._observe_expiry()
            log.info("%s: serving the new certificate from %s to new connections", self.what,
                     self.cfg.cert_file)
        if ca != self.client_ca_pem:
            self.client_ca_pem = ca
            log.info("%s: verifying new connections' client certificates with the new CA bundle from %s",
                     self.what, self.cfg.client_ca_file)
        return True


def _reason(exc: BaseException) -> str:
    """What failed, without file contents: an OSError's file name and reason, OpenSSL's reason, or
    the setting, file and reason :meth:`CertSource._read_checked` names."""
    if isinstance(exc, TlsFileError):
        return str(exc)
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError):
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, ssl.SSLError):
        return _ssl_reason(exc)
    return str(exc)


def _ssl_reason(exc: ssl.SSLError | ValueError) -> str:
    """OpenSSL's reason code (``KEY_VALUES_MISMATCH``), or, when it has none (``cadata`` without a
    certificate), its message without the ``(_ssl.c:NNNN)`` source position; never file bytes."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    text = exc.strerror if isinstance(exc, ssl.SSLError) and exc.strerror else str(exc)
    return text.split(" (_ssl.c:")[0] or type(exc).__name__


def _der_element(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start, end) of the value of the DER element at ``pos``."""
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(der[pos:pos + n], "big")
        pos += n
    if pos + length > len(der):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def certificate_not_after(cert_pem: bytes) -> float:
    """notAfter of the first certificate of a PEM chain (the leaf), as a Unix time.

    Read from the DER (RFC 5280: Certificate, tbsCertificate, [version], serialNumber, signature,
    issuer, validity), since the standard library decodes only a peer's certificate.
    """
    text = cert_pem.decode("ascii")
    begin = text.index(ssl.PEM_HEADER)
    end = text.index(ssl.PEM_FOOTER, begin) + len(ssl.PEM_FOOTER)
    der = ssl.PEM_cert_to_DER_cert(text[begin:end])
    _, tbs, _ = _der_element(der, 0)
    _, pos, _ = _der_element(der, tbs)
    tag, _, end_version = _der_element(der, pos)
    if tag == 0xA0:  # [0] version
        pos = end_version
    for _field in ("serialNumber", "signature", "issuer"):
        pos = _der_element(der, pos)[2]
    _, validity, _ = _der_element(der, pos)
    not_before_end = _der_element(der, validity)[2]
    tag, start, stop = _der_element(der, not_before_end)
    value = der[start:stop].decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ: 50-99 are 19xx
        year = int(value[:2])
        value = f"{year + (1900 if year >= 50 else 2000)}{value[2:]}"
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError(f"notAfter has DER tag {tag:#x}")
    when = datetime.datetime.strptime(value, "%Y%m%d%H%M%SZ").replace(tzinfo=datetime.UTC)
    return when.timestamp()


class _PairFiles:
    """The pair written to a private temporary directory, for ``SSLContext.load_cert_chain``
    (which takes paths): what is loaded is exactly the bytes that were checked."""

    def __init__(self, cert: bytes, key: bytes) -> None:
        self._cert, self._key = cert, key
        self._dir = ""

    def __enter__(self) -> tuple[str, str]:
        self._dir = tempfile.mkdtemp(prefix="tg-tls-")  # mode 0700
        cert_path, key_path = os.path.join(self._dir, "cert.pem"), os.path.join(self._dir, "key.pem")
        for path, data in ((cert_path, self._cert), (key_path, self._key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        return cert_path, key_path

    def __exit__(self, *_exc: object) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


# -- OTLP/gRPC ---------------------------------------------------------------------------------
def grpc_credentials(cfg: TlsServerConfig, what: str = "server.tls",
                     source: CertSource | None = None) -> grpc.ServerCredentials:
    """Server credentials for ``add_secure_port``, re-reading changed files (see the docstring);
    ``source``: the listener's ``CertSource`` when OTLP/HTTP shares it (else one of its own)."""
    import grpc

    source = source if source is not None else CertSource(cfg, what)
    if cfg.min_version != "1.2":
        log.warning("%s.min_version %s: not enforced on OTLP/gRPC (grpc-python has no setting; its floor "
                    "is TLS 1.2); enforced on OTLP/HTTP and admin", what, cfg.min_version)

    def configuration() -> Any:
        return grpc.ssl_server_certificate_configuration([(source.key_pem, source.cert_pem)],
                                                         root_certificates=source.client_ca_pem)

    interval = cfg.reload_every_s
    next_check = time.monotonic() + interval
    served = source.generation

    def fetch() -> Any:
        # Called by grpc at the start of each handshake; None keeps the current configuration.
        nonlocal next_check, served
        now = time.monotonic()
        if interval <= 0:
            return None
        if now >= next_check:
            next_check = now + interval
            source.refresh()
        if source.generation == served:  # taken by the HTTP timer, or by this fetcher, already?
            return None
        served = source.generation
        return configuration()  # new pair and/or client CA

    return grpc.dynamic_ssl_server_credentials(configuration(), fetch,
                                               require_client_authentication=source.client_ca_pem is not None)


def grpc_client_names(auth_context: Mapping[str, Any]) -> tuple[str, ...]:
    """The verified client certificate's CN and SANs from a call's ``auth_context()``."""
    out: list[str] = []
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth_context.get(key, ()) or ():
            out.append(value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))
    return tuple(out)


# -- OTLP/HTTP and admin -----------------------------------------------------------------------
# The shortest time between two re-reads by the HTTP/admin timer (seconds), whatever
# ``reload_interval_s`` says (gRPC re-reads in its handshake fetcher, so needs no floor).
_MIN_TIMER_S = 0.01


class HttpTls:
    """The ``ssl.SSLContext`` of an HTTP listener (``context``, for ``create_server``), whose
    handshakes are switched to a context built from the files now on disk (see the docstring)."""

    def __init__(self, cfg: TlsServerConfig, what: str, source: CertSource | None = None) -> None:
        self._source = source if source is not None else CertSource(cfg, what)
        self._built = self._source.generation
        # A Collector value such as reload_interval: 1ns (there: check at every handshake) would
        # re-arm this timer at once, forever, holding a core; 10 ms apart costs about 0.5 % of one.
        every = cfg.reload_every_s
        self._interval = max(every, _MIN_TIMER_S) if every > 0 else 0.0
        self.context = self._build()
        self._current = self.context
        self.context.sni_callback = self._select
        self._timer: asyncio.TimerHandle | None = None

    def _build(self) -> ssl.SSLContext:
        """A server context from the source's current certificate, key and client CA."""
        source = self._source
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = _VERSIONS[source.cfg.min_version]
        ctx.set_alpn_protocols(["http/1.1"])
        with _PairFiles(source.cert_pem, source.key_pem) as (cert_path, key_path):
            ctx.load_cert_chain(cert_path, key_path)
        if source.client_ca_pem is not None:
            ctx.load_verify_locations(cadata=source.client_ca_pem.decode("ascii"))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def _select(self, conn: ssl.SSLObject | ssl.SSLSocket, _server_name: str | None,
                ctx: ssl.SSLContext) -> None:
        # OpenSSL's servername callback: runs for every ClientHello, before the certificate is
        # sent and the client's is verified, so the switched-to context decides both.
        if self._current is not ctx:
            conn.context = self._current

    def start(self) -> None:
        """Begin re-reading the files every ``reload_interval_s``, at least 10 ms apart (a no-op
        when it is 0)."""
        if self._interval > 0:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._reload)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _reload(self) -> None:
        try:
            self._source.refresh()
            if self._source.generation != self._built:  # taken here or by the gRPC fetcher
                self._built = self._source.generation
                self._current = self._build()
        except (OSError, ssl.SSLError, ValueError) as exc:  # checked already: only a full disk or the like
            log.warning("%s: cannot load the new certificate or client CA: %s", self._source.what,
                        type(exc).__name__)
        self._timer = asyncio.get_running_loop().call_later(self._interval, self._reload)


def http_client_names(peercert: Mapping[str, Any] | None) -> tuple[str, ...]:
    """CN and SANs of the verified client certificate, from ``get_extra_info("peercert")``."""
    if not peercert:
        return ()
    out: list[str] = []
    for rdn in peercert.get("subject", ()):
        out.extend(str(value) for name, value in rdn if name == "commonName")
    out.extend(str(value) for _kind, value in peercert.get("subjectAltName", ()))
    return tuple(out)


def maybe_cert_source(cfg: TlsServerConfig | None, what: str) -> CertSource | None:
    """The listener's one ``CertSource``, or None when ``cfg`` is absent or has no certificate."""
    return CertSource(cfg, what) if cfg is not None and cfg.enabled else None


def maybe_http_tls(cfg: TlsServerConfig | None, what: str,
                   source: CertSource | None = None) -> HttpTls | None:
    """The listener's TLS, or None when ``cfg`` is absent or has no certificate (plaintext);
    ``source``: the ``CertSource`` it shares with OTLP/gRPC, if any."""
    return HttpTls(cfg, what, source) if cfg is not None and cfg.enabled else None

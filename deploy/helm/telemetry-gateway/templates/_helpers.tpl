{{/* Names and labels. */}}
{{- define "tg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tg.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "tg.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "tg.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tg.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tg.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "tg.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: telemetry-gateway
{{- end -}}

{{- define "tg.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "tg.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tg.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The ports, from the gateway's config (so the container, Service and probes agree with it). */}}
{{- define "tg.grpcPort" -}}{{ .Values.config.server.grpc_port | default 4317 }}{{- end -}}
{{- define "tg.httpPort" -}}{{ .Values.config.server.http_port | default 4318 }}{{- end -}}
{{- define "tg.adminPort" -}}{{ .Values.config.admin.port | default 8888 }}{{- end -}}
{{- define "tg.pipelinesPort" -}}{{ (.Values.config.pipelines | default dict).admin_port | default 8889 }}{{- end -}}
{{- define "tg.partitions" -}}{{ ((.Values.config.bus | default dict).kafka | default dict).partitions | default 6 }}{{- end -}}

{{/* The environment of every container: chart-made TG_* overrides, then env, then secretEnv. */}}
{{- define "tg.commonEnv" -}}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- range .Values.secretEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
{{- end }}
{{- end -}}

{{- define "tg.configVolume" -}}
- name: config
  configMap:
    name: {{ include "tg.fullname" . }}
- name: tmp
  emptyDir: {}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tg.configMounts" -}}
- name: config
  mountPath: /etc/telemetry-gateway/config.yaml
  subPath: config.yaml
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Checks that stop a broken release before it reaches the cluster. */}}
{{- define "tg.checks" -}}
{{- $g := .Values.gateway -}}
{{- if le (int $g.terminationGracePeriodSeconds) (add (int $g.preStopSleepSeconds) (int $g.drainSeconds) | int) -}}
{{- fail (printf "gateway.terminationGracePeriodSeconds (%v) must exceed preStopSleepSeconds + drainSeconds (%v)" $g.terminationGracePeriodSeconds (add $g.preStopSleepSeconds $g.drainSeconds)) -}}
{{- end -}}
{{- if and (not $g.workers) (not (dig "limits" "cpu" "" $g.resources)) -}}
{{- fail "gateway.workers: 0 takes the workers from the CPU limit: set gateway.resources.limits.cpu or gateway.workers" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) -}}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret)" -}}
{{- end -}}
{{- $partitions := include "tg.partitions" . | int -}}
{{- range $sink, $s := .Values.pipelines.sinks -}}
{{- if and $s.enabled (gt (int $s.replicas) $partitions) -}}
{{- fail (printf "pipelines.sinks.%s.replicas (%v) exceeds the topics' partitions (config.bus.kafka.partitions: %v): the extra workers would get no partition" $sink $s.replicas $partitions) -}}
{{- end -}}
{{- end -}}
{{- end -}}

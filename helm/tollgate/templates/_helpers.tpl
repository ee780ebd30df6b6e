{{/*
Naming, labels and small lookups shared by every template.
*/}}

{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Release-scoped base name. Truncated so that "<fullname>-job-intake" still fits in 63 characters.
*/}}
{{- define "tollgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tollgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tollgate.labels" -}}
helm.sh/chart: {{ include "tollgate.chart" . }}
{{ include "tollgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tollgate
{{- end }}

{{/*
Labels of one component. Takes (dict "root" $ "component" "gateway").
*/}}
{{- define "tollgate.componentSelectorLabels" -}}
{{ include "tollgate.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tollgate.componentLabels" -}}
{{ include "tollgate.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Resource name of one component: "<fullname>-<component>". Takes the same dict.
*/}}
{{- define "tollgate.componentName" -}}
{{- printf "%s-%s" (include "tollgate.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tollgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tollgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference. Takes (dict "root" $ "image" <service image values>).
*/}}
{{- define "tollgate.image" -}}
{{- $root := .root }}
{{- $tag := .image.tag | default $root.Values.image.tag | default $root.Chart.AppVersion }}
{{- if $root.Values.image.registry }}
{{- printf "%s/%s:%s" (trimSuffix "/" $root.Values.image.registry) .image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{- define "tollgate.secretName" -}}
{{- required "secrets.existingSecret must name a Secret holding the database and AMQP URLs" .Values.secrets.existingSecret }}
{{- end }}

{{/*
The AMQP prefix set in jobIntake.env (INTAKE__AMQP__PREFIX), or "" when none is set. Every
service on the broker (job-intake, worker, billing, webhook) must use the same prefix: it names
every exchange and queue. billing, worker and webhook get it as their own *__AMQP__PREFIX
unless their env sets one.
*/}}
{{- define "tollgate.amqpPrefix" -}}
{{- with .Values.jobIntake.env }}
{{- with index . "INTAKE__AMQP__PREFIX" }}
{{- toString . }}
{{- end }}
{{- end }}
{{- end }}

{{/*
In-cluster URL of the job-intake service, handed to the gateway.
*/}}
{{- define "tollgate.intakeUrl" -}}
{{- printf "http://%s:%d" (include "tollgate.componentName" (dict "root" . "component" "job-intake")) (int .Values.jobIntake.service.port) }}
{{- end }}

{{/*
In-cluster URL of the billing service, handed to the gateway.
*/}}
{{- define "tollgate.billingUrl" -}}
{{- printf "http://%s:%d" (include "tollgate.componentName" (dict "root" . "component" "billing")) (int .Values.billing.service.port) }}
{{- end }}

{{/*
In-cluster URL of the webhook service, handed to the gateway (tenants' /v1/webhook-endpoints and
/v1/webhook-deliveries).
*/}}
{{- define "tollgate.webhookUrl" -}}
{{- printf "http://%s:%d" (include "tollgate.componentName" (dict "root" . "component" "webhook")) (int .Values.webhook.service.port) }}
{{- end }}

{{/*
The objects every Tollgate service has: ConfigMap, Deployment, Service, PodDisruptionBudget.
Each takes one dict:
  root        the top-level context ($)
  component      "gateway" | "job-intake" | "worker" | "billing" | "webhook"
  values         that service's values (.Values.gateway, ...)
  envPrefix      the service's configuration prefix ("GATEWAY", "INTAKE", "WORKER", "BILLING",
                 "WEBHOOK")
  amqp           true when the service talks to RabbitMQ
  internalToken  true when the service has an internal_token (gateway sends it, job-intake,
                 billing and webhook require it): <envPrefix>__INTERNAL_TOKEN comes from
                 secrets.internalTokenKey when that is set
  env            service-specific non-secret variables computed by the chart
  secretEnv      optional list of (dict "name" ENV_VAR "ref" (dict "existingSecret" S "key" K)):
                 each with a non-empty key becomes a secretKeyRef (S empty: secrets.existingSecret)
*/}}

{{- define "tollgate.workload.configData" -}}
{{- $p := .envPrefix -}}
{{- $data := dict
      (printf "%s__HTTP__HOST" $p) "0.0.0.0"
      (printf "%s__HTTP__PORT" $p) (toString .values.port)
      "RUST_LOG" .root.Values.config.rustLog
-}}
{{- $data = merge (deepCopy (.values.env | default dict)) (deepCopy (.env | default dict)) (deepCopy (.root.Values.config.env | default dict)) $data -}}
{{- range $k := keys $data | sortAlpha }}
{{ $k }}: {{ get $data $k | toString | quote }}
{{- end }}
{{- end }}

{{- define "tollgate.workload.configmap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "tollgate.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "tollgate.componentLabels" . | nindent 4 }}
data:
  {{- include "tollgate.workload.configData" . | trim | nindent 2 }}
{{- end }}

{{- define "tollgate.workload.probes" -}}
{{- $probes := mergeOverwrite (deepCopy .root.Values.probes) (deepCopy (.values.probes | default dict)) -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  {{- toYaml $probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  {{- toYaml $probes.readiness | nindent 2 }}
startupProbe:
  httpGet:
    path: /healthz
    port: http
  {{- toYaml $probes.startup | nindent 2 }}
{{- end }}

{{- define "tollgate.workload.deployment" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $secret := include "tollgate.secretName" $root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "tollgate.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tollgate.componentLabels" . | nindent 4 }}
spec:
  {{- if not (dig "autoscaling" "enabled" false $v) }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "tollgate.componentSelectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "tollgate.componentSelectorLabels" . | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include "tollgate.workload.configData" . | sha256sum }}
        {{- if $root.Values.metrics.podAnnotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $v.port | quote }}
        prometheus.io/path: /metrics
        {{- end }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "tollgate.serviceAccountName" $root }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "tollgate.image" (dict "root" $root "image" $v.image) | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          ports:
            - name: http
              containerPort: {{ $v.port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "tollgate.componentName" . }}
          env:
            - name: {{ printf "%s__DATABASE__URL" .envPrefix }}
              valueFrom:
                secretKeyRef:
                  name: {{ $secret }}
                  key: {{ $root.Values.secrets.databaseUrlKey }}
            {{- if .amqp }}
            - name: {{ printf "%s__AMQP__URL" .envPrefix }}
              valueFrom:
                secretKeyRef:
                  name: {{ $secret }}
                  key: {{ $root.Values.secrets.amqpUrlKey }}
            {{- end }}
            {{- if and .internalToken $root.Values.secrets.internalTokenKey }}
            - name: {{ printf "%s__INTERNAL_TOKEN" .envPrefix }}
              valueFrom:
                secretKeyRef:
                  name: {{ $secret }}
                  key: {{ $root.Values.secrets.internalTokenKey }}
            {{- end }}
            {{- range .secretEnv }}
            {{- if .ref.key }}
            - name: {{ .name }}
              valueFrom:
                secretKeyRef:
                  name: {{ .ref.existingSecret | default $secret }}
                  key: {{ .ref.key }}
            {{- end }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- include "tollgate.workload.probes" . | nindent 10 }}
          {{- if gt (int $v.preStopSleepSeconds) 0 }}
          lifecycle:
            preStop:
              exec:
                command: ["sleep", {{ $v.preStopSleepSeconds | quote }}]
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- with $v.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $root.Values.tmpVolumeSizeLimit }}
        {{- with $v.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{- define "tollgate.workload.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "tollgate.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "tollgate.componentLabels" . | nindent 4 }}
  {{- with .values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .values.service.type }}
  selector:
    {{- include "tollgate.componentSelectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .values.service.port }}
      targetPort: http
      protocol: TCP
{{- end }}

{{- define "tollgate.workload.pdb" -}}
{{- $pdb := .values.podDisruptionBudget -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "tollgate.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "tollgate.componentLabels" . | nindent 4 }}
spec:
  {{- if hasKey $pdb "minAvailable" }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $pdb.maxUnavailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "tollgate.componentSelectorLabels" . | nindent 6 }}
{{- end }}

{{/*
All four objects of one service, separated as YAML documents.
*/}}
{{- define "tollgate.workload" -}}
{{ include "tollgate.workload.configmap" . }}
---
{{ include "tollgate.workload.deployment" . }}
---
{{ include "tollgate.workload.service" . }}
{{- if .values.podDisruptionBudget.enabled }}
---
{{ include "tollgate.workload.pdb" . }}
{{- end }}
{{- end }}

#!/usr/bin/env bash
# The whole `rininstall apply` on a real K3s host: a first install (K3s, the site registry,
# seeding, a chart and manifests deployed and waited for), an upgrade that prunes, a downgrade
# refused, a rollback, and `rininstall status` after each; then a release whose pod Pod Security
# refuses, named with the refusal. The cluster step itself is tested against a real control
# plane without K3s (tests/tests/cluster.rs); what this adds is what only K3s shows: install.sh
# and the service, containerd pulling through the site registry's mirror, the images directory,
# the in-cluster site registry, and Helm actually running in the chart's install Job.
#
# Run it as root on a DISPOSABLE Linux machine (amd64 or arm64; a fresh VM): it installs K3s and
# leaves it installed. The build half needs the internet (rinbundle pulls the K3s release and the
# images from Docker Hub); the install half uses nothing but the bundle.
#
#   sudo RIN_K3S_E2E=1 tests/k3s-e2e.sh
#   sudo RIN_K3S_E2E=1 cargo test -p rin-tests --test cluster -- --ignored
#
# Needs: cargo, helm (to package the test chart), and the packages README lists for the tests.
# K3S_VERSION picks the K3s release (default v1.31.4+k3s1); KEEP=1 keeps the work directory.
set -euo pipefail

if [ "${RIN_K3S_E2E:-}" != 1 ]; then
    echo "refusing to run: this installs K3s on this machine; set RIN_K3S_E2E=1 on a disposable host" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "run as root (K3s is installed into /)" >&2
    exit 2
fi
for tool in cargo helm; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

K3S_VERSION=${K3S_VERSION:-v1.31.4+k3s1}
case "$(uname -m)" in
    x86_64) ARCH=amd64 ;;
    aarch64) ARCH=arm64 ;;
    *) echo "unsupported architecture $(uname -m)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
cargo build --release --bins
BIN=$PWD/target/release
W=$(mktemp -d)
[ "${KEEP:-}" = 1 ] || trap 'rm -rf "$W"' EXIT
export SOURCE_DATE_EPOCH=1700000000
kubectl() { k3s kubectl "$@"; }
step() { echo; echo "== $*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

step "the test chart (a ConfigMap and a busybox Deployment)"
mkdir -p "$W/chart/templates"
cat >"$W/chart/Chart.yaml" <<'EOF'
apiVersion: v2
name: e2e-chart
version: 0.1.0
EOF
cat >"$W/chart/values.yaml" <<'EOF'
message: from the chart's defaults
EOF
cat >"$W/chart/templates/all.yaml" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-message
data:
  message: {{ .Values.message | quote }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-sleeper
spec:
  replicas: 1
  selector: {matchLabels: {app: sleeper}}
  template:
    metadata: {labels: {app: sleeper}}
    spec:
      containers:
        - name: sleeper
          image: docker.io/library/busybox:1.36
          command: [sleep, "86400"]
EOF
helm package "$W/chart" -d "$W/charts" >/dev/null

stack() { # stack VERSION DIR: the test stack
    local version=$1 dir=$2
    mkdir -p "$dir/manifests" "$dir/charts" "$dir/values"
    cp "$W/charts/e2e-chart-0.1.0.tgz" "$dir/charts/"
    echo "message: from the stack $version" >"$dir/values/e2e-chart.yaml"
    cat >"$dir/bundle.yaml" <<EOF
name: rin-e2e
version: $version
platforms: [$ARCH]
k3s:
  version: $K3S_VERSION
images:
  - reference: docker.io/library/registry:2.8.3
  - reference: docker.io/library/busybox:1.36
charts:
  - name: e2e-chart
    version: 0.1.0
    archive: charts/e2e-chart-0.1.0.tgz
    values: values/e2e-chart.yaml
    namespace: e2e
EOF
    cat >"$dir/manifests/00-namespace.yaml" <<'EOF'
apiVersion: v1
kind: Namespace
metadata:
  name: e2e
  labels:
    pod-security.kubernetes.io/enforce: baseline
EOF
    cat >"$dir/manifests/web.yaml" <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: e2e}
spec:
  replicas: $([ "$version" = 1.0.0 ] && echo 1 || echo 2)
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: docker.io/library/busybox:1.36
          command: [httpd, -f, -p, "8080"]
          readinessProbe: {tcpSocket: {port: 8080}}
EOF
    if [ "$version" = 1.2.0 ]; then
        # Breaks the namespace's `baseline` profile: its pods are refused by admission.
        cat >"$dir/manifests/privileged.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: privileged, namespace: e2e}
spec:
  selector: {matchLabels: {app: privileged}}
  template:
    metadata: {labels: {app: privileged}}
    spec:
      containers:
        - name: p
          image: docker.io/library/busybox:1.36
          command: [sleep, "86400"]
          securityContext: {privileged: true}
EOF
    fi
    cat >"$dir/manifests/secret.yaml" <<'EOF'
apiVersion: v1
kind: Secret
metadata:
  name: e2e-db
  namespace: e2e
  annotations: {rin.dev/generate: password}
stringData: {user: e2e}
EOF
    if [ "$version" = 1.0.0 ]; then
        cat >"$dir/manifests/old-settings.yaml" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata: {name: old-settings, namespace: e2e}
data: {setting: "only in 1.0.0"}
EOF
    fi
}

step "bundles 1.0.0, 1.1.0 and 1.2.0 (pulled from the internet)"
"$BIN/rinbundle" keygen --out "$W/site"
for v in 1.0.0 1.1.0 1.2.0; do
    stack "$v" "$W/stack-$v"
    "$BIN/rinbundle" build --stack "$W/stack-$v" --arch "$ARCH" --key "$W/site.key" \
        --cache "$W/cache" -o "$W/e2e-$v.tar.zst"
done

step "apply 1.0.0: K3s, the site registry, seeding, the stack"
"$BIN/rininstall" apply "$W/e2e-1.0.0.tar.zst" --key "$W/site.pub" --timeout 600
kubectl -n e2e rollout status deploy/web --timeout=60s
kubectl -n e2e get configmap old-settings >/dev/null || fail "old-settings missing after 1.0.0"
[ "$(kubectl -n e2e get configmap e2e-chart-message -o jsonpath='{.data.message}')" = "from the stack 1.0.0" ] \
    || fail "the chart did not get the stack's values"
[ "$(kubectl -n e2e get deploy web -o jsonpath='{.spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values[0]}')" = "$ARCH" ] \
    || fail "web is not placed on $ARCH nodes"
[ "$(kubectl -n kube-system get job helm-install-e2e-chart -o jsonpath='{.status.succeeded}')" = 1 ] \
    || fail "the chart's install Job did not succeed"
password=$(kubectl -n e2e get secret e2e-db -o jsonpath='{.data.password}' | base64 -d)
[ "${#password}" = 32 ] || fail "the generated secret has no 32-character password"
"$BIN/rininstall" status

step "apply 1.0.0 again: nothing to change"
"$BIN/rininstall" apply "$W/e2e-1.0.0.tar.zst" --key "$W/site.pub" | tee "$W/again.txt"
grep -q ": 0 blobs uploaded" "$W/again.txt" || fail "the re-run uploaded blobs"
grep -q "wrote " "$W/again.txt" && fail "the re-run wrote host files"

step "upgrade to 1.1.0: old-settings is pruned, web scales to 2"
"$BIN/rininstall" apply "$W/e2e-1.1.0.tar.zst" --key "$W/site.pub" --timeout 600 | tee "$W/up.txt"
grep -q "pruned ConfigMap e2e/old-settings" "$W/up.txt" || fail "old-settings was not pruned"
! kubectl -n e2e get configmap old-settings 2>/dev/null || fail "old-settings still exists"
[ "$(kubectl -n e2e get deploy web -o jsonpath='{.status.readyReplicas}')" = 2 ] || fail "web is not at 2 ready"

step "a downgrade is refused"
if "$BIN/rininstall" apply "$W/e2e-1.0.0.tar.zst" --key "$W/site.pub" 2>"$W/down.txt"; then
    fail "applying 1.0.0 over 1.1.0 succeeded without --allow-downgrade"
fi
grep -q -- "--allow-downgrade" "$W/down.txt" || fail "the refusal does not name --allow-downgrade"

step "rollback to 1.0.0"
"$BIN/rininstall" rollback --timeout 600 | tee "$W/rollback.txt"
grep -q "rolled back to 1.0.0" "$W/rollback.txt" || fail "rollback did not report 1.0.0"
kubectl -n e2e get configmap old-settings >/dev/null || fail "old-settings not restored by the rollback"
"$BIN/rininstall" status --json | tee "$W/status.json"
grep -q '"version": "1.0.0"' "$W/status.json" || fail "status does not show 1.0.0"
grep -q '"healthy": true' "$W/status.json" || fail "status is not healthy"
[ "$(kubectl -n e2e get secret e2e-db -o jsonpath='{.data.password}' | base64 -d)" = "$password" ] \
    || fail "the generated secret changed across upgrade and rollback"

step "1.2.0, whose pod Pod Security refuses: named with the refusal, nothing recorded"
if "$BIN/rininstall" apply "$W/e2e-1.2.0.tar.zst" --key "$W/site.pub" --timeout 60 2>"$W/psa.txt"; then
    fail "a Deployment breaking the namespace's baseline profile was reported healthy"
fi
grep -q 'violates PodSecurity "baseline:latest"' "$W/psa.txt" || fail "the refusal does not name Pod Security"
"$BIN/rininstall" status --json | grep -q '"version": "1.0.0"' || fail "the failed apply was recorded"

echo
echo "k3s end-to-end: passed"

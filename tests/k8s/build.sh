#!/usr/bin/env bash
# Builds, from upstream source through the Go module proxy, the Kubernetes control plane that the
# cluster tests run against (tests/src/k8s.rs starts it):
#   kubernetes-VERSION/      kube-apiserver, kube-controller-manager, kube-scheduler (control-plane/go.mod)
#   kine-VERSION/            kine, the etcd API over SQLite that a single K3s server runs (kine/go.mod)
#   kwok-VERSION/            kwok, simulated nodes and pods (kwok/go.mod)
#   helm-controller-VERSION/ K3s's chart controller, the version K3s embeds
# into ${RIN_K8S_CACHE:-~/.cache/rin-k8s}, one directory per component and version (versions.env),
# skipping what is already built. A directory appears only once its build finished (built under a
# temporary name, then renamed), so an interrupted build is redone, never half used.
#
# Needs Go 1.24 or newer and a C compiler (kine's SQLite). Takes about half an hour cold on two
# cores; seconds when everything is built.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${RIN_K8S_CACHE:-$HOME/.cache/rin-k8s}

fail() {
  echo "tests/k8s/build.sh: $*" >&2
  exit 1
}
command -v go >/dev/null ||
  fail "no 'go' on PATH: the cluster tests need Go 1.24 or newer (and the Go module proxy) to build the Kubernetes control plane from source"
command -v cc >/dev/null || command -v gcc >/dev/null ||
  fail "no C compiler: kine's SQLite needs one (apt-get install gcc)"

# shellcheck source=versions.env
. "$here/versions.env"

# The version a module's go.mod pins for PATH, which must be what versions.env says.
pinned() {
  local dir=$1 path=$2 want=$3 got
  got=$(cd "$here/$dir" && go list -m -f '{{.Version}}' "$path")
  [ "$got" = "$want" ] || fail "$dir/go.mod pins $path $got, versions.env says $want: make them agree"
}

# build NAME VERSION COMMAND...: run COMMAND with $out set to a fresh directory, then move it into
# place as the cache's NAME-VERSION.
build() {
  local name=$1 version=$2
  shift 2
  local dest=$cache/$name-$version
  if [ -d "$dest" ]; then
    echo "$name $version: built ($dest)"
    return
  fi
  mkdir -p "$cache"
  out=$(mktemp -d "$cache/.$name-$version.XXXXXX")
  chmod 755 "$out"
  local started=$SECONDS
  echo "$name $version: building into $dest"
  if ! "$@"; then
    rm -rf "$out"
    fail "building $name $version failed (see above); if the module proxy refused a module, the message names it"
  fi
  mv "$out" "$dest"
  echo "$name $version: built in $((SECONDS - started)) s"
}

export CGO_ENABLED=1 GOFLAGS=-buildvcs=false

kubernetes() {
  # The version the API server reports, as a release build's ldflags set it.
  local minor=${KUBERNETES#v1.}
  minor=${minor%%.*}
  local v=k8s.io/component-base/version
  (cd "$here/control-plane" && go build -trimpath -o "$out/" \
    -ldflags "-s -w -X $v.gitVersion=$KUBERNETES -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler)
}

kine() {
  (cd "$here/kine" && go build -trimpath -ldflags "-s -w" -o "$out/kine" github.com/k3s-io/kine)
}

kwok() {
  (cd "$here/kwok" && go build -trimpath -ldflags "-s -w" -o "$out/kwok" sigs.k8s.io/kwok/cmd/kwok)
}

# helm-controller's module graph reaches an old wrangler whose test dependencies (vbom.ml/util) the
# proxy refuses, so no wrapper module of ours can be tidied around it; `go install PATH@VERSION`
# builds it as its own main module, with its own go.sum, checked against the checksum database.
helm_controller() {
  (cd "$out" && GOBIN=$out go install -trimpath -ldflags "-s -w" \
    "github.com/k3s-io/helm-controller@$HELM_CONTROLLER")
}

pinned control-plane k8s.io/kubernetes "$KUBERNETES"
pinned kine github.com/k3s-io/kine "$KINE"
pinned kwok sigs.k8s.io/kwok "$KWOK"

build kine "$KINE" kine
build kwok "$KWOK" kwok
build helm-controller "$HELM_CONTROLLER" helm_controller
build kubernetes "$KUBERNETES" kubernetes

#!/usr/bin/env bash
# AppStack's copy of ../shared/tools/envtest/build-assets.sh with one fix: the vendored
# github.com/modern-go/reflect2 1.0.1 of Kubernetes 1.20 crashes the apiserver when built
# with Go 1.18+ (SIGSEGV in mapiterinit as soon as a custom resource is created: json-iterator
# iterating its metadata map), so it is replaced by Debian's 1.0.2 before building.
#
# Builds a real Kubernetes control plane for tests, from Debian's packages alone:
# kube-apiserver and kube-controller-manager 1.20.2 (Debian source package `kubernetes`)
# and etcd 3.4 (Debian package `etcd-server`), laid out as an envtest assets folder.
#
#   export KUBEBUILDER_ASSETS="$(../shared/tools/envtest/build-assets.sh)"
#
# Prints the folder on stdout (progress goes to stderr). Cached: a second call returns at once.
# Needs root (apt-get) and about 6 minutes on 2 cores the first time.
# Where newer binaries exist (setup-envtest on a machine with internet), point
# KUBEBUILDER_ASSETS at them instead: the folder layout is the same.
set -euo pipefail

VERSION=1.20.2
DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
ASSETS=${ENVTEST_ASSETS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/envtest-debian/$VERSION-reflect2}
log() { echo "build-assets: $*" >&2; }
# The Debian mirror this machine's apt already uses (its sources name it; nothing is hard-coded here).
debian_mirror() {
  grep -rhoE 'https?://[^[:space:]"]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
    grep -vE 'snapshot|security' | sed 's|/$||' | head -n 1 | grep . ||
    { echo "no Debian mirror found in /etc/apt/sources.list*: add one (deb or URIs line ending in /debian)" >&2; return 1; }
}

if [[ -x $ASSETS/kube-apiserver && -x $ASSETS/kube-controller-manager && -x $ASSETS/etcd ]]; then
  echo "$ASSETS"
  exit 0
fi

need_pkgs=()
command -v go >/dev/null || need_pkgs+=(golang-go)
command -v etcd >/dev/null || need_pkgs+=(etcd-server)
command -v rsync >/dev/null || need_pkgs+=(rsync)
command -v make >/dev/null || need_pkgs+=(make)
[[ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ]] || need_pkgs+=(golang-github-modern-go-reflect2-dev)
command -v openssl >/dev/null || need_pkgs+=(openssl)
src_list=/etc/apt/sources.list.d/envtest-debsrc.sources
if [[ ! -f $src_list ]]; then
  cat >"$src_list" <<SRC
Types: deb-src
URIs: $(debian_mirror)
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
log "apt-get update"
apt-get update -qq >&2
if ((${#need_pkgs[@]})); then
  log "installing ${need_pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
log "fetching Debian source package kubernetes $DEB_VERSION"
apt-get source --download-only -qq "kubernetes=$DEB_VERSION" >&2
tar xzf kubernetes_*.orig.tar.gz
# Kubernetes 1.20 builds in GOPATH mode from its vendor/ folder.
mkdir -p gopath/src/k8s.io
mv "kubernetes-$VERSION" gopath/src/k8s.io/kubernetes
export GOPATH=$work/gopath GOCACHE=$work/gocache GO111MODULE=off GOFLAGS=
cd gopath/src/k8s.io/kubernetes
log "replacing vendored reflect2 1.0.1 with Debian's 1.0.2 (Go 1.18+ map iteration)"
rm -rf vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
rm -rf vendor/github.com/modern-go/reflect2/.git* vendor/github.com/modern-go/reflect2/*_test.go
log "generating code (about 1 minute)"
make generated_files >&2
log "building kube-apiserver and kube-controller-manager (about 5 minutes)"
make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >&2

mkdir -p "$ASSETS"
cp _output/bin/kube-apiserver _output/bin/kube-controller-manager "$ASSETS/"
ln -sf "$(command -v etcd)" "$ASSETS/etcd"
if command -v kubectl >/dev/null; then ln -sf "$(command -v kubectl)" "$ASSETS/kubectl"; fi
log "done: $("$ASSETS/kube-apiserver" --version)"
echo "$ASSETS"

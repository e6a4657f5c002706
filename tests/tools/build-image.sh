#!/usr/bin/env bash
# Builds the AppStack image (the Dockerfile at the repository root) with Debian's daemonless
# tools and no registry: buildah and podman with runc, on bases made here from Debian
# packages.
#
#   image=$(tests/tools/build-image.sh)      # e.g. localhost/appstack:0.1.0
#   tests/tools/smoke-image.sh "$image"
#
# 1. the Debian base: `debootstrap --variant=minbase SUITE`, cached as a tarball in
#    ~/.cache/appstack-image/ (keyed by suite and BASE_REV), imported as
#    localhost/debian-base:SUITE-rBASE_REV;
# 2. the runtime base (tests/tools/image/runtime-base.Containerfile): what distroless/cc
#    holds, from Debian's packages (glibc, libgcc_s, CA certificates, tzdata; no shell);
# 3. the builder (tests/tools/image/builder.Containerfile): the Debian base with gcc and
#    the host's Rust toolchain, laid out as the official rust image;
# 4. the image: `buildah bud` of the Dockerfile with BASE_IMAGE and BUILDER_IMAGE set to
#    those two. Its cargo registry and target folder are buildah cache mounts, so a rebuild
#    after a change compiles only the workspace crates (and links).
# Images 1–3 are built once and kept in podman's storage, tagged by what they are made of.
#
# `build-image.sh postgres` builds, on the same Debian base, the PostgreSQL image of the
# one-box cluster suite (tests/tools/image/postgres.Containerfile, tagged by what it is made
# of) instead of steps 2–4.
#
# Prints the image name on stdout; progress, timings and the size go to stderr.
# Needs root (apt-get, debootstrap, rootful podman). On a fresh Debian bookworm machine it
# installs podman, buildah, debootstrap and runc. The settings this machine needs
# (`--runtime runc`: crun refuses the hybrid cgroup layout; `default_ulimits = []`:
# raising RLIMIT_NOFILE is refused) are added to /etc/containers/containers.conf when it
# lacks them, keeping whatever else it holds.
#
# Environment: APPSTACK_IMAGE_TAG (default localhost/appstack:<workspace version>),
# APPSTACK_IMAGE_CONTEXT (build context, default this repository),
# APPSTACK_IMAGE_BASE / APPSTACK_IMAGE_BUILDER (use these images instead of building 2 / 3),
# APPSTACK_IMAGE_SUITE (default bookworm), APPSTACK_IMAGE_CACHE (default
# ~/.cache/appstack-image), APPSTACK_IMAGE_TARGET_CACHE_MAX_MB (default 6144: the cached
# cargo target folder is emptied before a build once it has grown past this).
set -euo pipefail
what=${1:-appstack}
[[ $what == appstack || $what == postgres ]] || { echo "usage: $0 [appstack|postgres]" >&2; exit 2; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tools=$root/tests/tools/image
SUITE=${APPSTACK_IMAGE_SUITE:-bookworm}
# Bump to rebuild the cached Debian base (e.g. for the suite's point releases).
BASE_REV=1
CACHE=${APPSTACK_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/appstack-image}
RUNTIME=(--runtime runc)

log() { echo "build-image: $*" >&2; }
die() { log "$*"; exit 1; }
elapsed() { echo "$(($(date +%s) - $1))s"; }

# --- tools ------------------------------------------------------------------------------
need=()
for tool in podman buildah debootstrap runc; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if ((${#need[@]})); then
  [[ $(id -u) == 0 ]] || die "needs root to install ${need[*]}"
  log "installing ${need[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

# --- containers.conf: no raised ulimits -------------------------------------------------
# A caller's own CONTAINERS_CONF is left alone, and so is a default_ulimits already set.
conf=/etc/containers/containers.conf
if [[ -z ${CONTAINERS_CONF:-} ]] &&
  ! { [[ -f $conf ]] && grep -Eq '^[[:space:]]*default_ulimits[[:space:]]*=' "$conf"; }; then
  if [[ $(id -u) != 0 ]]; then
    log "warning: $conf does not set default_ulimits = [] (not root: not changing it)"
  else
    log "setting default_ulimits = [] under [containers] in $conf"
    mkdir -p /etc/containers
    line='default_ulimits = []  # AppStack: raising RLIMIT_NOFILE is refused on some hosts'
    if [[ ! -f $conf ]]; then
      printf '[containers]\n%s\n' "$line" >"$conf"
    elif grep -Eq '^[[:space:]]*\[containers\][[:space:]]*(#.*)?$' "$conf"; then
      # Right after the (first) [containers] header; every other line is kept as it was.
      awk -v line="$line" '{ print } !done && /^[[:space:]]*\[containers\][[:space:]]*(#.*)?$/ { print line; done = 1 }' \
        "$conf" >"$conf.appstack-tmp"
      cat "$conf.appstack-tmp" >"$conf" && rm -f "$conf.appstack-tmp"
    else
      printf '\n[containers]\n%s\n' "$line" >>"$conf"
    fi
  fi
fi

mkdir -p "$CACHE"
# A short hash of files and strings, to tag images by what they are made of.
fingerprint() { cat "$@" | sha256sum | cut -c1-12; }

# --- 1. the Debian base (debootstrap, cached as a tarball) -------------------------------
# The Debian mirror this machine's apt already uses (as tests/tools/build-envtest-assets.sh).
debian_mirror() {
  local found
  found=$({ grep -rhoE 'https?://[^[:space:]"]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true; } |
    grep -vE 'snapshot|security' | sed 's|/$||' | head -n 1)
  [[ -n $found ]] || die "no Debian mirror found in /etc/apt/sources.list*"
  echo "$found"
}
base_tar=$CACHE/debian-$SUITE-minbase-r$BASE_REV.tar.gz
base_img=localhost/debian-base:$SUITE-r$BASE_REV
if ! podman image exists "$base_img"; then
  if [[ ! -s $base_tar ]]; then
    start=$(date +%s)
    mirror=$(debian_mirror)
    dir=$(mktemp -d "$CACHE/debootstrap.XXXXXX")
    unmount_all() {
      # debootstrap mounts /proc and /sys inside the tree while it runs; never rm through them.
      local m
      for m in $(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
      done
    }
    trap 'unmount_all; rm -rf --one-file-system "$dir" "$base_tar.tmp"' EXIT
    log "debootstrap --variant=minbase $SUITE from $mirror (once; cached in $base_tar)"
    debootstrap --variant=minbase "$SUITE" "$dir" "$mirror" >&2
    unmount_all
    # The runtime fills /dev; apt's caches are not part of a base.
    find "$dir/dev" -mindepth 1 -delete
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/log/*.log \
      "$dir"/tmp/* "$dir"/var/tmp/*
    tar --numeric-owner -C "$dir" -c . | gzip -1 >"$base_tar.tmp"
    mv "$base_tar.tmp" "$base_tar"
    rm -rf --one-file-system "$dir"
    trap - EXIT
    log "Debian base built in $(elapsed "$start") ($(du -h "$base_tar" | cut -f1) compressed)"
  fi
  log "importing $base_tar as $base_img"
  gzip -dc "$base_tar" | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$base_img" >&2
fi

# An image FROM the Debian base, from tests/tools/image/CONTAINERFILE, unless IMAGE exists:
#   build_on_base IMAGE CONTAINERFILE DESCRIPTION [buildah args…]
build_on_base() {
  local image=$1 file=$2 what=$3 start
  shift 3
  podman image exists "$image" && return 0
  start=$(date +%s)
  log "building $image: $what"
  buildah bud "${RUNTIME[@]}" --network host --force-rm --layers=false "$@" \
    --build-arg DEBIAN_BASE="$base_img" -f "$tools/$file" -t "$image" "$tools" >&2
  log "$what built in $(elapsed "$start")"
}

# --- the PostgreSQL image (instead of 2–4) ----------------------------------------------
if [[ $what == postgres ]]; then
  pg_img=localhost/appstack-test-postgres:15-$SUITE-$(
    fingerprint "$tools/postgres.Containerfile" "$tools/postgres-entrypoint.sh" <(echo "$base_img")
  )
  build_on_base "$pg_img" postgres.Containerfile "PostgreSQL image"
  echo "$pg_img"
  exit 0
fi

# --- 2. the runtime base (distroless-like) ------------------------------------------------
if [[ -n ${APPSTACK_IMAGE_BASE:-} ]]; then
  runtime_img=$APPSTACK_IMAGE_BASE
else
  runtime_img=localhost/appstack-runtime-base:$SUITE-$(fingerprint "$tools/runtime-base.Containerfile" <(echo "$base_img"))
  build_on_base "$runtime_img" runtime-base.Containerfile "runtime base"
fi

# --- 3. the builder (Debian base + gcc + the host's Rust toolchain) -----------------------
if [[ -n ${APPSTACK_IMAGE_BUILDER:-} ]]; then
  builder_img=$APPSTACK_IMAGE_BUILDER
else
  command -v rustc >/dev/null 2>&1 || die "no rustc on PATH: the builder copies the host's toolchain"
  sysroot=$(rustc --print sysroot)
  sysroot=$(readlink -f "$sysroot")
  [[ -x $sysroot/bin/cargo && -d $sysroot/lib/rustlib && $sysroot != /usr && $sysroot != /usr/local ]] ||
    die "the Rust toolchain at $sysroot is not a self-contained (rustup) toolchain with cargo"
  rust_version=$(rustc --version | awk '{ print $2 }')
  # Certificate authorities this machine added (Debian's place for them): the builder's
  # cargo reaches crates.io as the host's does, through whatever TLS proxy it trusts.
  host_ca=/usr/local/share/ca-certificates
  [[ -d $host_ca ]] || { host_ca=$CACHE/no-extra-ca && mkdir -p "$host_ca"; }
  builder_img=localhost/appstack-builder:rust-$rust_version-$SUITE-$(
    fingerprint "$tools/builder.Containerfile" <(echo "$base_img"; rustc -vV; find "$host_ca" -type f -exec cat {} +)
  )
  build_on_base "$builder_img" builder.Containerfile "builder (Rust $rust_version from $sysroot)" \
    -v "$sysroot:/host-rust:ro" -v "$host_ca:/host-ca:ro"
fi

# --- 4. the image ---------------------------------------------------------------------------
context=${APPSTACK_IMAGE_CONTEXT:-$root}
version=$(sed -n '/^\[workspace\.package\]/,/^\[/ s/^version = "\(.*\)"/\1/p' "$context/Cargo.toml")
[[ -n $version ]] || die "no [workspace.package] version in $context/Cargo.toml"
source_url=$(sed -n '/^\[workspace\.package\]/,/^\[/ s/^repository = "\(.*\)"/\1/p' "$context/Cargo.toml")
revision=$(git -C "$context" rev-parse HEAD 2>/dev/null || echo unknown)
# The commit's time, not the build's: the same commit builds the same labels (and layers).
created=$(git -C "$context" log -1 --format=%cI 2>/dev/null || true)
tag=${APPSTACK_IMAGE_TAG:-localhost/appstack:$version}
start=$(date +%s)
log "building $tag from $context (base $runtime_img, builder $builder_img)"
buildah bud "${RUNTIME[@]}" --network host --layers --force-rm \
  --build-arg BASE_IMAGE="$runtime_img" \
  --build-arg BUILDER_IMAGE="$builder_img" \
  --build-arg VERSION="$version" \
  --build-arg REVISION="$revision" \
  --build-arg CREATED="$created" \
  --build-arg SOURCE="${source_url:-unknown}" \
  --build-arg TARGET_CACHE_MAX_MB="${APPSTACK_IMAGE_TARGET_CACHE_MAX_MB:-6144}" \
  -f "$context/Dockerfile" -t "$tag" "$context" >&2
log "image built in $(elapsed "$start")"

# Images that lost their tag to this build (older builds of the same version) and their
# layers; tagged images, the bases and buildah's cache mounts stay.
podman image prune -f >/dev/null 2>&1 || true

size=$(podman image inspect --format '{{.Size}}' "$tag")
log "$tag: $((size / 1000 / 1000)) MB ($size bytes); base $runtime_img: $(($(podman image inspect --format '{{.Size}}' "$runtime_img") / 1000 / 1000)) MB"
podman images --filter reference="$tag" >&2
echo "$tag"

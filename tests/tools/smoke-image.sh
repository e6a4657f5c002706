#!/usr/bin/env bash
# Runs the AppStack image as a hardened pod would — read-only root filesystem, UID/GID 65532,
# every capability dropped, no new privileges — against a throwaway PostgreSQL on loopback,
# and checks that it serves:
#
#   tests/tools/smoke-image.sh [IMAGE]     # default localhost/appstack:<workspace version>
#
# 1. the image's own metadata: user 65532:65532, OCI labels, entrypoint; no /bin/sh in it;
# 2. `appstack keygen` into a mounted folder (the auth keys Secret), `appstack migrate`;
# 3. `appstack all` (auth, main and worker in one process): /healthz and /readyz on the
#    admin port, /metrics, and with grpcurl (on PATH or in ~/.cache/k8s-lint/bin; skipped
#    with a warning when absent) grpc.health.v1.Health/Check, reflection, SignUp and Login;
#    then SIGTERM (podman stop) must end it cleanly (exit code 0);
# 4. `appstack-operator crd` and `--help` from the same image.
# The PostgreSQL (the machine's server binaries, as the `postgres` user when root, in a
# temporary folder) and the container are stopped and removed on exit, whatever happens.
# The containers use the host's network (--network host) to reach it: only loopback
# addresses are listened on. Needs podman with runc (tests/tools/build-image.sh sets it up).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
version=$(sed -n '/^\[workspace\.package\]/,/^\[/ s/^version = "\(.*\)"/\1/p' "$root/Cargo.toml")
image=${1:-localhost/appstack:$version}

log() { echo "smoke-image: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

podman image exists "$image" || die "no image $image (build it with tests/tools/build-image.sh)"
command -v curl >/dev/null 2>&1 || {
  log "installing curl"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >&2
}
pg_bin=$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1 || true)
pg_bin=${pg_bin%/initdb}
if [[ -z $pg_bin ]] && command -v initdb >/dev/null 2>&1; then pg_bin=$(dirname "$(command -v initdb)"); fi
if [[ -z $pg_bin ]]; then
  log "installing PostgreSQL server binaries"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  pg_bin=$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1)
  pg_bin=${pg_bin%/initdb}
fi
grpcurl=$(command -v grpcurl 2>/dev/null || true)
[[ -n $grpcurl ]] || [[ ! -x ${XDG_CACHE_HOME:-$HOME/.cache}/k8s-lint/bin/grpcurl ]] ||
  grpcurl=${XDG_CACHE_HOME:-$HOME/.cache}/k8s-lint/bin/grpcurl

work=$(mktemp -d /tmp/appstack-smoke.XXXXXX)
chmod 755 "$work"
name=appstack-smoke-$$
as_pg=()
[[ $(id -u) == 0 ]] && as_pg=(runuser -u postgres --)

cleanup() {
  local rc=$?
  if podman container exists "$name" 2>/dev/null; then
    ((rc == 0)) || { log "the container's last logs:"; podman logs --tail 40 "$name" >&2 || true; }
    podman rm -f -t 5 "$name" >/dev/null 2>&1 || true
  fi
  if [[ -f $work/pg/postmaster.pid ]]; then
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" stop -m fast >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port (nothing answers a connect) not taken yet, in REPLY; no subshell,
# so `taken` keeps every port handed out.
taken=" "
free_port() {
  local p _
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 30000))
    [[ $taken == *" $p "* ]] && continue
    if ! (: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      taken+="$p "
      REPLY=$p
      return 0
    fi
  done
  die "no free loopback port"
}
free_port; pg_port=$REPLY
free_port; grpc_port=$REPLY
free_port; admin_port=$REPLY

# --- 1. metadata ---------------------------------------------------------------------------
user=$(podman image inspect --format '{{.Config.User}}' "$image")
[[ $user == 65532:65532 ]] || die "the image runs as '$user', not 65532:65532"
for label in title description source licenses version revision; do
  value=$(podman image inspect --format "{{index .Labels \"org.opencontainers.image.$label\"}}" "$image")
  [[ -n $value && $value != "<no value>" ]] || die "label org.opencontainers.image.$label is missing"
done
log "image $image: user $user, version $(podman image inspect --format '{{index .Labels "org.opencontainers.image.version"}}' "$image"), revision $(podman image inspect --format '{{index .Labels "org.opencontainers.image.revision"}}' "$image"), $(($(podman image inspect --format '{{.Size}}' "$image") / 1000 / 1000)) MB"

run=(podman run --runtime runc --pull never --rm --read-only --user 65532:65532
  --cap-drop all --security-opt no-new-privileges --network host)
if "${run[@]}" --entrypoint /bin/sh "$image" -c true >/dev/null 2>&1; then
  log "note: the image has a shell (/bin/sh): its base is not distroless"
else
  log "no shell in the image (/bin/sh cannot be run)"
fi

# --- PostgreSQL on loopback ------------------------------------------------------------------
mkdir -p "$work/pg" "$work/sock" "$work/keys"
printf 'smoke-superuser\n' >"$work/pwfile"
if [[ $(id -u) == 0 ]]; then chown postgres: "$work/pg" "$work/sock" "$work/pwfile"; fi
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg" -U postgres --auth-local=trust \
  --auth-host=scram-sha-256 --pwfile="$work/pwfile" -E UTF8 >"$work/initdb.log" 2>&1 ||
  { cat "$work/initdb.log" >&2; die "initdb"; }
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/sock/pg.log" -w -t 30 \
  -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $work/sock -c fsync=off" start >/dev/null ||
  { cat "$work/sock/pg.log" >&2; die "PostgreSQL did not start"; }
"${as_pg[@]}" "$pg_bin/psql" -qX -h "$work/sock" -p "$pg_port" -U postgres -d postgres \
  -c "CREATE ROLE appstack LOGIN PASSWORD 'smoke-password'" \
  -c "CREATE DATABASE appstack OWNER appstack" >/dev/null
database_url="postgres://appstack:smoke-password@127.0.0.1:$pg_port/appstack"
log "PostgreSQL $("$pg_bin/postgres" --version | awk '{ print $3 }') on 127.0.0.1:$pg_port"

# --- 2. keygen, migrate ------------------------------------------------------------------------
chown 65532:65532 "$work/keys"
chmod 700 "$work/keys"
key=$("${run[@]}" -v "$work/keys:/keys" "$image" keygen --keys-dir /keys)
log "keygen wrote $key"
"${run[@]}" -e DATABASE_URL="$database_url" "$image" migrate --log-format json >"$work/migrate.log" 2>&1 ||
  { cat "$work/migrate.log" >&2; die "appstack migrate"; }
log "migrate: done"

# --- 3. appstack all -----------------------------------------------------------------------------
podman run --runtime runc --pull never -d --name "$name" --read-only --user 65532:65532 \
  --cap-drop all --security-opt no-new-privileges --network host \
  -e DATABASE_URL="$database_url" \
  -v "$work/keys:/var/run/appstack/auth-keys:ro" \
  "$image" all --grpc-addr "127.0.0.1:$grpc_port" --admin-addr "127.0.0.1:$admin_port" \
  --log-format json >/dev/null
admin=http://127.0.0.1:$admin_port
ready=
for _ in $(seq 1 120); do
  [[ $(podman inspect --format '{{.State.Running}}' "$name") == true ]] || die "appstack all exited"
  if ready=$(curl -fsS --max-time 2 "$admin/readyz" 2>/dev/null); then break; fi
  ready=
  sleep 0.5
done
[[ -n $ready ]] || die "/readyz did not answer 200 within 60 s"
log "GET /healthz: $(curl -fsS --max-time 5 "$admin/healthz" | tr '\n' ' ')"
log "GET /readyz: $(echo "$ready" | tr '\n' ' ')"
curl -fsS --max-time 5 "$admin/.well-known/jwks.json" | grep -q '"kty":"OKP"' ||
  die "/.well-known/jwks.json has no OKP key"
log "GET /.well-known/jwks.json: the keygen key is published"

if [[ -n $grpcurl ]]; then
  grpc=127.0.0.1:$grpc_port
  health=$("$grpcurl" -plaintext -max-time 5 "$grpc" grpc.health.v1.Health/Check)
  grep -q '"status": "SERVING"' <<<"$health" || die "gRPC health: $health"
  log "grpc.health.v1.Health/Check: $(tr -d '\n ' <<<"$health")"
  services=$("$grpcurl" -plaintext -max-time 5 "$grpc" list)
  for service in appstack.auth.v1.AuthService appstack.main.v1.RequestService appstack.worker.v1.WorkerAdmin; do
    grep -qx "$service" <<<"$services" || die "reflection does not list $service"
  done
  log "reflection lists: $(tr '\n' ' ' <<<"$services")"
  credentials='{"email":"smoke@example.com","password":"correct horse battery"}'
  "$grpcurl" -plaintext -max-time 20 -d "$credentials" "$grpc" appstack.auth.v1.AuthService/SignUp >/dev/null
  tokens=$("$grpcurl" -plaintext -max-time 20 -d "$credentials" "$grpc" appstack.auth.v1.AuthService/Login)
  grep -q '"accessToken"' <<<"$tokens" || die "Login returned no access token: $tokens"
  log "SignUp + Login: an access token (the database is written and read)"
else
  log "warning: grpcurl not found (PATH, ~/.cache/k8s-lint/bin): gRPC checks skipped"
fi

metrics=$(curl -fsS --max-time 5 "$admin/metrics")
grep -qx '# EOF' <<<"$metrics" || die "/metrics is not OpenMetrics (no # EOF)"
if [[ -n $grpcurl ]]; then
  grep -q '^grpc_server_handled_total{.*method="Login"' <<<"$metrics" ||
    die "/metrics does not count the Login call"
fi
log "GET /metrics: $(grep -c '^# TYPE' <<<"$metrics") metric families"

podman stop -t 20 "$name" >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
[[ $code == 0 ]] || die "appstack all exited with $code on SIGTERM"
log "SIGTERM: appstack all stopped cleanly (exit code 0)"

# --- 4. the operator ----------------------------------------------------------------------------------
crd=$("${run[@]}" --entrypoint /usr/local/bin/appstack-operator "$image" crd)
grep -q '^kind: CustomResourceDefinition' <<<"$crd" || die "appstack-operator crd printed no CRD"
"${run[@]}" --entrypoint /usr/local/bin/appstack-operator "$image" --help >/dev/null
log "appstack-operator crd: $(grep -m1 '^  name:' <<<"$crd" | awk '{ print $2 }'); --help: ok"
log "passed"

# syntax=docker/dockerfile:1
# One image for every AppStack role and the operator:
#   /usr/local/bin/appstack            (entrypoint: auth, main, worker, all, migrate, keygen, …)
#   /usr/local/bin/appstack-operator   (use --entrypoint, or `command:` in a pod spec)
#
#   docker build -t appstack:0.1.0 .
#   docker run --rm --read-only appstack:0.1.0 --help
#
# Runs as UID/GID 65532 with no shell and nothing written outside mounted volumes, so it
# fits `readOnlyRootFilesystem: true` and the restricted pod security standard. Both
# binaries need only glibc and libgcc_s at run time: TLS uses rustls with the bundled
# webpki roots (database, external services); the operator verifies the API server with the
# service account's CA, and falls back to the system trust store (/etc/ssl/certs) only for
# a kubeconfig without one. Any base with glibc ≥ 2.36, libgcc_s and CA certificates
# works: distroless/cc by default; CI builds without a registry and passes a base made from
# Debian packages (tests/tools/build-image.sh).

# The build stage's image: a Rust toolchain (≥ 1.95, edition 2024) with a C compiler (ring).
ARG BUILDER_IMAGE=docker.io/library/rust:1.95-bookworm
# The runtime stage's image. Keep its glibc no older than the builder's (bookworm: 2.36).
ARG BASE_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY . .
# debuginfo: keeps symbols (backtraces name functions) and drops the line tables, which
# are most of each binary's size. `none` keeps them, `symbols` drops both.
ARG STRIP=debuginfo
# The cached target folder is emptied before a build when it has grown past this (MiB):
# stale artifacts of older versions pile up in a cache mount and nothing else removes them.
ARG TARGET_CACHE_MAX_MB=6144
# Cache mounts (BuildKit, buildah ≥ 1.24): the registry and the target folder outlive the
# build, so a rebuild after a source change recompiles only the workspace crates. They are
# never part of the image; the binaries are copied out in the same step.
RUN --mount=type=cache,id=appstack-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=appstack-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=appstack-target,target=/src/target \
    set -eu; \
    used=$(du -sm target | cut -f1); \
    if [ "$used" -gt "$TARGET_CACHE_MAX_MB" ]; then \
      echo "target cache holds ${used} MiB (> ${TARGET_CACHE_MAX_MB}): emptying it"; \
      find target -mindepth 1 -maxdepth 1 -exec rm -rf {} +; \
    fi; \
    CARGO_PROFILE_RELEASE_STRIP="$STRIP" CARGO_INCREMENTAL=0 CARGO_TERM_COLOR=never \
      cargo build --release --locked -p appstack -p appstack-operator; \
    mkdir -p /out; \
    cp target/release/appstack target/release/appstack-operator /out/

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=
ARG SOURCE=https://example.invalid/appstack
LABEL org.opencontainers.image.title="appstack" \
      org.opencontainers.image.description="AppStack: the appstack server (auth, main, worker, all, migrate) and appstack-operator in one image" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY --from=build /out/appstack /out/appstack-operator /usr/local/bin/
USER 65532:65532
# appstack: gRPC 8080, admin HTTP 9090 (server.grpcAddr, server.adminAddr).
# appstack-operator: admin HTTP 8081 (--admin-addr).
EXPOSE 8080 9090 8081
ENTRYPOINT ["/usr/local/bin/appstack"]
CMD ["--help"]

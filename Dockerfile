# syntax=docker/dockerfile:1
# The worker (and the starter), built from this repository. No protoc needed: the Temporal crates are
# built with vendored-protox.
#
#   docker build -t stateful-worker .
#   docker run --rm -e TEMPORAL_ADDRESS=host:7233 -v "$PWD/my-schema.yaml:/etc/stateful/schema.yaml:ro" stateful-worker
#
# The image runs as an unprivileged user (uid/gid 10001), reads its schema from
# /etc/stateful/schema.yaml (STATEFUL_SCHEMA; the walkthrough's example by default: mount yours over
# it), serves its metrics and health endpoints on 0.0.0.0:9464, and reports healthy while
# http://127.0.0.1:9464/healthz answers.

FROM rust:1.95-bookworm AS build
WORKDIR /src

# 1. The dependencies, in a layer of their own that stays cached until a manifest or Cargo.lock
#    changes: the workspace's manifests, every member's targets as empty stubs, one build.
#    STUB_LIBS are library targets (empty files), STUB_MAINS every other target (`fn main() {}`):
#    every member's lib, bins and build script, and the benches, tests and examples its Cargo.toml
#    declares. scripts/check-deploy fails when these lists no longer match the members' targets, and
#    when a member's Cargo.toml is not copied below.
ARG STUB_LIBS="engine/src/lib.rs core/src/lib.rs workflows/src/lib.rs activities/src/lib.rs client/src/lib.rs explorer/src/lib.rs worker/src/lib.rs tests/common/mod.rs"
ARG STUB_MAINS="engine/benches/engine.rs worker/src/main.rs starter/src/main.rs tests/bench/cluster.rs tests/bench/floor_worker.rs tests/main.rs tests/build.rs examples/custom-worker/src/main.rs"
COPY Cargo.toml Cargo.lock ./
COPY engine/Cargo.toml engine/
COPY core/Cargo.toml core/
COPY workflows/Cargo.toml workflows/
COPY activities/Cargo.toml activities/
COPY client/Cargo.toml client/
COPY explorer/Cargo.toml explorer/
COPY worker/Cargo.toml worker/
COPY starter/Cargo.toml starter/
COPY tests/Cargo.toml tests/
COPY examples/custom-worker/Cargo.toml examples/custom-worker/
RUN set -eu; \
    for f in $STUB_LIBS; do mkdir -p "$(dirname "$f")"; : > "$f"; done; \
    for f in $STUB_MAINS; do mkdir -p "$(dirname "$f")"; echo 'fn main() {}' > "$f"; done; \
    cargo build --release --locked -p worker -p starter; \
    rm -f $STUB_LIBS $STUB_MAINS

# 2. The sources. The stubs' build is newer than the sources' own times (COPY keeps them): touching
#    the stubbed files makes cargo rebuild the workspace's crates instead of keeping the stubs.
COPY . .
RUN set -eu; \
    touch $STUB_LIBS $STUB_MAINS; \
    cargo build --release --locked -p worker -p starter; \
    cp target/release/worker target/release/starter /usr/local/bin/

FROM debian:bookworm-slim
# curl: the HEALTHCHECK's probe. Versions come with the pinned Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 stateful \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin stateful
COPY --from=build /usr/local/bin/worker /usr/local/bin/starter /usr/local/bin/
COPY examples /app/examples
COPY examples/schema.yaml /etc/stateful/schema.yaml
ENV STATEFUL_SCHEMA=/etc/stateful/schema.yaml \
    STATEFUL_METRICS_ADDR=0.0.0.0:9464 \
    RUST_LOG=info
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 9464
# /healthz answers while the process is alive and serving (/readyz, for Kubernetes' readiness, once
# it polls Temporal). It is served on the metrics address: with --metrics-addr elsewhere or `none`,
# override or disable this check (`HEALTHCHECK NONE` in a derived image, `healthcheck: disable` in
# compose).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["curl", "-fsS", "--max-time", "2", "-o", "/dev/null", "http://127.0.0.1:9464/healthz"]
ENTRYPOINT ["worker", "--no-dev-server"]

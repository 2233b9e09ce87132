# The worker (and the starter), built from this repository. No protoc needed: the Temporal crates are
# built with vendored-protox.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p worker -p starter

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/worker /src/target/release/starter /usr/local/bin/
COPY examples /app/examples
ENV STATEFUL_SCHEMA=/app/examples/schema.yaml \
    STATEFUL_METRICS_ADDR=0.0.0.0:9464 \
    RUST_LOG=info
EXPOSE 9464
ENTRYPOINT ["worker", "--no-dev-server"]

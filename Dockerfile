# One image per service, from one build: docker build --target ingest -t kollus/ingest .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# librdkafka is built from source by rdkafka-sys: it needs a C toolchain and make (present), and
# OpenSSL's headers (libssl-dev, present) for TLS and SASL to Kafka; the runtime needs libssl3.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --workspace --bins \
 && mkdir -p /out \
 && cp target/release/ingest target/release/sync-worker target/release/history-worker \
       target/release/token-api target/release/kollus-archive target/release/kollus-catalog /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 kollus \
 && mkdir -p /var/lib/kollus/spool /var/lib/kollus/archive \
 && chown kollus /var/lib/kollus/spool /var/lib/kollus/archive
USER kollus
ENV LOG_FORMAT=json

FROM runtime AS ingest
COPY --from=build /out/ingest /usr/local/bin/ingest
ENTRYPOINT ["/usr/local/bin/ingest"]

FROM runtime AS sync-worker
COPY --from=build /out/sync-worker /usr/local/bin/sync-worker
ENTRYPOINT ["/usr/local/bin/sync-worker"]

FROM runtime AS history-worker
COPY --from=build /out/history-worker /usr/local/bin/history-worker
ENTRYPOINT ["/usr/local/bin/history-worker"]

FROM runtime AS token-api
COPY --from=build /out/token-api /usr/local/bin/token-api
ENTRYPOINT ["/usr/local/bin/token-api"]

FROM runtime AS archive
COPY --from=build /out/kollus-archive /usr/local/bin/kollus-archive
ENTRYPOINT ["/usr/local/bin/kollus-archive"]

# A one-off command, not a service: `docker compose run --rm kollus-catalog backfill` (profile
# "tools"; README "Bringing an existing Kollus account").
FROM runtime AS catalog
COPY --from=build /out/kollus-catalog /usr/local/bin/kollus-catalog
ENTRYPOINT ["/usr/local/bin/kollus-catalog"]

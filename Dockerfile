# Ripple as a container, for docker-compose.yml. The local stack scripts do not use it.
# The base image's Rust meets the workspace's rust-version (1.94, sqlx 0.9's minimum).
FROM rust:1.94-bookworm AS build
# librdkafka is built against the system's OpenSSL (TLS, SASL), zstd and curl (OAUTHBEARER OIDC).
RUN apt-get update && apt-get install -y --no-install-recommends libssl-dev libzstd-dev libcurl4-openssl-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --bin ripple

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 libzstd1 libcurl4 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ripple /usr/local/bin/ripple
ENTRYPOINT ["ripple"]
CMD ["run", "--config", "/etc/ripple/ripple.toml"]

# Ripple as a container, for docker-compose.yml. The local stack scripts do not use it.
FROM rust:1.88-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev libsasl2-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --bin ripple

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ripple /usr/local/bin/ripple
ENTRYPOINT ["ripple"]
CMD ["run", "--config", "/etc/ripple/ripple.toml"]

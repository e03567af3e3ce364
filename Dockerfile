# The API as a container image: one instance per container, pointed at read replicas with
# API_REPLICAS (comma-separated URLs for the read-only role; from a secret, never in the
# command) or API_REPLICA_FILE (a mounted secret file). Build: docker build -t related-api .
# Two ports: 8080 is the public API (what the balancer forwards to); 9464 is the operator
# listener (/metrics, /healthz, /readyz) for the scraper's network only: never publish it where
# the public edge or the storefront's clients can reach it.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p api

FROM debian:bookworm-slim
RUN useradd --system --no-create-home api
COPY --from=build /src/target/release/api /usr/local/bin/api
USER api
ENV API_LISTEN=0.0.0.0:8080
# Inside the container's own network namespace: reachable only where the port is published.
ENV API_ADMIN_LISTEN=0.0.0.0:9464
EXPOSE 8080 9464
ENTRYPOINT ["/usr/local/bin/api"]

# The API as a container image: one instance per container, pointed at read replicas with
# API_REPLICAS (comma-separated URLs for the read-only role). Build: docker build -t related-api .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p api

FROM debian:bookworm-slim
RUN useradd --system --no-create-home api
COPY --from=build /src/target/release/api /usr/local/bin/api
USER api
ENV API_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/api"]

# syntax=docker/dockerfile:1
# One image with the project's three binaries: `api` (the default command), `seeder` and
# `loadgen`. Build it from the repository root:
#
#   docker build -t related-items .
#
# Run the API (replica URLs hold a password: pass them in API_REPLICAS from a secret or mount a
# file named by API_REPLICA_FILE, never on the command line):
#
#   docker run --rm -p 8080:8080 -e API_REPLICAS related-items
#   docker run --rm -e DATABASE_URL related-items seeder --products 100000
#   docker run --rm related-items loadgen run --host http://nginx:8080 --products 100000
#
# Two ports: 8080 is the public API (what the balancer forwards to); 9464 is the operator
# listener (/metrics, /healthz, /readyz) for the scraper's and the orchestrator's network only:
# never publish it where the public edge or the storefront's clients can reach it.
#
# Stopping: `docker stop` sends SIGTERM (STOPSIGNAL below); the API then stops accepting,
# finishes in-flight requests within API_SHUTDOWN_GRACE_MS (10 s by default) and exits 0. Give
# the container longer than that before SIGKILL (compose: stop_grace_period: 15s; Kubernetes:
# terminationGracePeriodSeconds). The binaries run as PID 1 and handle SIGTERM themselves.
#
# Layers: the first build stage compiles only the dependencies, from the manifests and the lock
# file with stub sources, so a change to the project's own code rebuilds only the last step.
# stack/tests/stack/deploy.rs checks this file's structure: images cannot be pulled or built on
# the development machine (docs/deploy.md).

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- 1. dependencies: manifests and lock file only, stub sources --------------------------------
FROM ${RUST_IMAGE} AS deps
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY api/Cargo.toml api/
COPY seeder/Cargo.toml seeder/
COPY stack/Cargo.toml stack/
COPY loadgen/Cargo.toml loadgen/
# Stub library and binary targets, so that `cargo build` compiles every dependency into this
# layer; the stubs are removed so that none of them survives into the real build.
RUN set -eux; \
    for crate in api seeder stack loadgen; do \
        mkdir -p "$crate/src"; \
        : > "$crate/src/lib.rs"; \
        echo 'fn main() {}' > "$crate/src/main.rs"; \
    done; \
    cargo build --release --locked -p api -p seeder -p loadgen; \
    rm -rf api/src seeder/src stack/src loadgen/src

# ---- 2. the project's own code ---------------------------------------------------------------
FROM deps AS build
# The release profile keeps line tables (Cargo.toml): 104 MB for the three binaries, 25 MB
# without them. The image drops them, keeping symbols (function names in backtraces);
# --build-arg STRIP_DEBUG=0 keeps them.
ARG STRIP_DEBUG=1
COPY . .
# COPY keeps the files' own modification times, which can be older than the stub build's
# outputs: touch the sources so that cargo rebuilds the workspace's crates, and only them.
RUN set -eux; \
    find api seeder stack loadgen -name '*.rs' -exec touch {} +; \
    cargo build --release --locked -p api -p seeder -p loadgen; \
    mkdir -p /out; \
    cp target/release/api target/release/seeder target/release/loadgen /out/; \
    if [ "$STRIP_DEBUG" = 1 ]; then strip --strip-debug /out/*; fi

# ---- 3. runtime: Debian slim, no compiler, a non-root user -----------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
# A fixed uid/gid (10001) so that mounted secrets and Kubernetes' runAsUser can name it.
RUN groupadd --system --gid 10001 related \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin related
COPY --from=build /out/api /out/seeder /out/loadgen /usr/local/bin/
COPY --chmod=0755 deploy/docker/healthcheck /usr/local/bin/healthcheck
USER 10001:10001
WORKDIR /tmp
# Inside the container's own network namespace: reachable only where the port is published.
ENV API_LISTEN=0.0.0.0:8080 \
    API_ADMIN_LISTEN=0.0.0.0:9464
EXPOSE 8080 9464
STOPSIGNAL SIGTERM
# GET /healthz on the operator listener (on the public one when API_ADMIN_LISTEN=off), with
# bash's /dev/tcp: the image needs no HTTP client. Containers that run `seeder` or `loadgen`
# from this image turn it off (compose: healthcheck: disable: true).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/healthcheck"]
CMD ["api"]

# syntax=docker/dockerfile:1
# webapi-gateway and chat-server in one image (docs/deployment.md, "Container image").
#
#   docker build --build-arg GIT_VERSION="$(git describe --always --dirty)" -t webapi-gateway .
#   docker run --rm -p 8080:8080 -e GATEWAY__SERVER__LISTEN=0.0.0.0:8080 webapi-gateway
#   docker run --rm --entrypoint chat-server webapi-gateway --version
#
# The build context has no .git (.dockerignore), so `--version` names the commit given as
# GIT_VERSION (build.rs falls back to WEBAPI_GATEWAY_GIT_VERSION, else "unknown").

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# The dependency skeleton: manifests, the lock file and empty targets. It changes only when
# they do, so the dependency layer below is rebuilt only then.
FROM ${RUST_IMAGE} AS skeleton
WORKDIR /src
COPY . .
RUN sh deploy/docker/skeleton.sh /src /skeleton

FROM ${RUST_IMAGE} AS builder
WORKDIR /build
COPY --from=skeleton /skeleton/ ./
RUN cargo build --release --locked -p webapi-gateway -p chat-server
COPY . .
ARG GIT_VERSION=unknown
ENV WEBAPI_GATEWAY_GIT_VERSION=${GIT_VERSION}
# The sources may be older than the skeleton's stand-ins: touch them so Cargo rebuilds them.
RUN find . -path ./target -prune -o -name '*.rs' -type f -exec touch {} + \
    && cargo build --release --locked -p webapi-gateway -p chat-server \
    && mkdir -p /out \
    && install -m 0755 target/release/webapi-gateway target/release/chat-server /out/

FROM ${RUNTIME_IMAGE}
# ca-certificates only: the gateway reaches GMS and SMTP servers over TLS. Left unpinned on
# purpose: it is the trust store, and a rebuild should take Debian's current one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /var/lib/webapi-gateway \
       --no-create-home --shell /usr/sbin/nologin gateway \
    && mkdir -p /var/lib/webapi-gateway /etc/webapi-gateway \
    && chown gateway:gateway /var/lib/webapi-gateway \
    && chmod 0700 /var/lib/webapi-gateway
COPY --from=builder /out/ /usr/local/bin/
COPY gateway.toml /etc/webapi-gateway/gateway.toml
COPY docs/deployment.md /usr/local/share/doc/webapi-gateway/deployment.md
# The e-mail spool (email.spool_dir, relative "spool/email" by default) lives here: mount a
# volume of its own for each gateway.
WORKDIR /var/lib/webapi-gateway
USER 10001:10001
# 8080 public listener, 8081 admin listener (/healthz, /readyz, /metrics), 7117 chat-server.
EXPOSE 8080 8081 7117
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/webapi-gateway"]
CMD ["--config", "/etc/webapi-gateway/gateway.toml"]

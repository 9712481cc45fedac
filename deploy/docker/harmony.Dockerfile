# syntax=docker/dockerfile:1.7
# adaptive harmony image, CPU build: `adaptive harmony` (port 50053). For GPUs use
# harmony-cuda.Dockerfile.
#
# Build from the repository root:
#   docker build -f deploy/docker/harmony.Dockerfile -t adaptive/harmony:dev-cpu .
# Runs as uid 10001 with a read-only root filesystem; writable paths: /tmp (tmpfs) and the model
# cache /opt/adaptive/cloud_cache (a volume in the chart).

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p adaptive-cli \
 && install -D -m 0755 target/release/adaptive /out/adaptive

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 adaptive \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin adaptive \
 && install -d -o 10001 -g 10001 /opt/adaptive/cloud_cache
COPY --from=build /out/adaptive /usr/local/bin/adaptive
ENV HOME=/tmp \
    TMPDIR=/tmp \
    HARMONY_SETTING_MODEL_CACHE_DIR=/opt/adaptive/cloud_cache
USER 10001:10001
EXPOSE 50053
ENTRYPOINT ["/usr/local/bin/adaptive"]
CMD ["harmony"]

# syntax=docker/dockerfile:1.7
# adaptive control plane image: `adaptive control-plane` (ports 9000 public, 9009 internal).
#
# Build from the repository root (the build context must be the workspace):
#   docker build -f deploy/docker/control-plane.Dockerfile -t adaptive/control-plane:dev .
# Runs as uid 10001 with a read-only root filesystem; the only writable path it needs is /tmp
# (the chart mounts an in-memory emptyDir there).

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binary is copied out of the
# cached target dir so that it lands in the image layer.
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
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin adaptive
COPY --from=build /out/adaptive /usr/local/bin/adaptive
ENV HOME=/tmp \
    TMPDIR=/tmp \
    ADAPTIVE_SERVER__BIND=0.0.0.0:9000 \
    ADAPTIVE_SERVER__BIND_INTERNAL=0.0.0.0:9009
USER 10001:10001
EXPOSE 9000 9009
ENTRYPOINT ["/usr/local/bin/adaptive"]
CMD ["control-plane"]

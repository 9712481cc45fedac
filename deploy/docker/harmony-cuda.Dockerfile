# syntax=docker/dockerfile:1.7
# adaptive harmony image, CUDA build (candle with --features cuda): `adaptive harmony` on NVIDIA
# GPUs (port 50053).
#
# Build from the repository root:
#   docker build -f deploy/docker/harmony-cuda.Dockerfile \
#     --build-arg CUDA_COMPUTE_CAP=90 -t adaptive/harmony:dev-cuda .
# CUDA_COMPUTE_CAP: 90 for H100/H200 (p5, p5e, p5en), 100 for B200 (p6-b200), 89 for L4/L40S
# (g6, g6e). The kernels are compiled for that one capability.
# The node needs an NVIDIA driver that supports CUDA 12.8 (570+; the EKS accelerated AMIs have it).
# Runs as uid 10001 with a read-only root filesystem; GPU device access comes from the NVIDIA
# container toolkit, not from the user.

ARG CUDA_VERSION=12.8.1
ARG UBUNTU_RELEASE=ubuntu24.04
ARG RUST_VERSION=1.95.0

FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU_RELEASE} AS build
ARG RUST_VERSION
ARG CUDA_COMPUTE_CAP=90
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl build-essential pkg-config \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/cuda/bin:${PATH}
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --profile minimal --default-toolchain ${RUST_VERSION}
WORKDIR /src
COPY . .
ENV CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p adaptive-cli --features cuda \
 && install -D -m 0755 target/release/adaptive /out/adaptive

# The runtime flavour carries cuBLAS/cuRAND, which candle's CUDA backend links against.
FROM nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU_RELEASE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 adaptive \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin adaptive \
 && install -d -o 10001 -g 10001 /opt/adaptive/cloud_cache
COPY --from=build /out/adaptive /usr/local/bin/adaptive
ENV HOME=/tmp \
    TMPDIR=/tmp \
    HARMONY_SETTING_MODEL_CACHE_DIR=/opt/adaptive/cloud_cache \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
EXPOSE 50053
ENTRYPOINT ["/usr/local/bin/adaptive"]
CMD ["harmony"]

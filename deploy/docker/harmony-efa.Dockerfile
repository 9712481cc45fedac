# syntax=docker/dockerfile:1.7
# adaptive harmony image with Elastic Fabric Adapter libraries: the `harmony-efa` variant the EKS
# guide names for multi-node compute pools. The same CUDA build as harmony-cuda.Dockerfile, plus
# the pinned AWS EFA installer's user-space parts (libfabric with the EFA provider and the
# aws-ofi-nccl plugin), so NCCL traffic between the nodes of a pool goes over the pod's
# `vpc.amazonaws.com/efa` devices. Kernel modules come from the node's AMI, not the image.
#
# Build from the repository root:
#   docker build -f deploy/docker/harmony-efa.Dockerfile \
#     --build-arg CUDA_COMPUTE_CAP=90 -t adaptive/harmony-efa:dev .

ARG CUDA_VERSION=12.8.1
ARG UBUNTU_RELEASE=ubuntu24.04
ARG RUST_VERSION=1.95.0
ARG EFA_INSTALLER_VERSION=1.38.0

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
ARG EFA_INSTALLER_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && curl -fsSL "https://efa-installer.amazonaws.com/aws-efa-installer-${EFA_INSTALLER_VERSION}.tar.gz" -o /tmp/efa.tar.gz \
 && tar -xzf /tmp/efa.tar.gz -C /tmp \
 && (cd /tmp/aws-efa-installer && ./efa_installer.sh -y --skip-kmod --skip-limit-conf --no-verify) \
 && rm -rf /tmp/aws-efa-installer /tmp/efa.tar.gz \
 && apt-get purge -y curl && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 adaptive \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin adaptive \
 && install -d -o 10001 -g 10001 /opt/adaptive/cloud_cache
COPY --from=build /out/adaptive /usr/local/bin/adaptive
ENV HOME=/tmp \
    TMPDIR=/tmp \
    HARMONY_SETTING_MODEL_CACHE_DIR=/opt/adaptive/cloud_cache \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/opt/amazon/efa/lib:/opt/amazon/ofi-nccl/lib \
    FI_PROVIDER=efa \
    FI_EFA_USE_DEVICE_RDMA=1
USER 10001:10001
EXPOSE 50053
ENTRYPOINT ["/usr/local/bin/adaptive"]
CMD ["harmony"]

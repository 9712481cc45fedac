# syntax=docker/dockerfile:1.7
# adaptive harmony image with Elastic Fabric Adapter libraries (the `harmony-efa` variant the
# EKS guide names for multi-node compute pools): the CUDA build of harmony-cuda.Dockerfile plus
# libfabric, the EFA provider and the aws-ofi-nccl plugin, so NCCL traffic between nodes of a
# pool goes over EFA (pods request `vpc.amazonaws.com/efa` devices).
#
# Build from the repository root, after building the CUDA image with the same tag:
#   docker build -f deploy/docker/harmony-cuda.Dockerfile --build-arg CUDA_COMPUTE_CAP=90 -t adaptive/harmony:dev-cuda .
#   docker build -f deploy/docker/harmony-efa.Dockerfile --build-arg BASE=adaptive/harmony:dev-cuda -t adaptive/harmony-efa:dev .
# EFA_INSTALLER_VERSION pins the AWS EFA installer (it bundles libfabric and aws-ofi-nccl).

ARG BASE=adaptive/harmony:dev-cuda
ARG EFA_INSTALLER_VERSION=1.38.0

FROM ${BASE} AS runtime
ARG EFA_INSTALLER_VERSION
USER 0:0
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && curl -fsSL "https://efa-installer.amazonaws.com/aws-efa-installer-${EFA_INSTALLER_VERSION}.tar.gz" -o /tmp/efa.tar.gz \
 && tar -xzf /tmp/efa.tar.gz -C /tmp \
 && cd /tmp/aws-efa-installer \
 && ./efa_installer.sh -y --skip-kmod --skip-limit-conf --no-verify \
 && cd / && rm -rf /tmp/aws-efa-installer /tmp/efa.tar.gz \
 && apt-get purge -y curl && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
ENV LD_LIBRARY_PATH=/opt/amazon/efa/lib:/opt/amazon/ofi-nccl/lib:${LD_LIBRARY_PATH} \
    FI_PROVIDER=efa \
    FI_EFA_USE_DEVICE_RDMA=1 \
    NCCL_PROTO=simple
USER 10001:10001
EXPOSE 50053
ENTRYPOINT ["/usr/local/bin/adaptive"]
CMD ["harmony"]

# One image for every entry point of asymdsd-scale: the sharding job (Ray head, workers and the
# RayJob submitter), DeepSpeed pretraining, evaluation and the MLflow tracking server.
#
#   docker build -t asymdsd-scale:0.1.0 .
#   docker run --rm asymdsd-scale:0.1.0 python -m sharding.shard_corpus --help
#   docker run --rm --gpus all asymdsd-scale:0.1.0 python launch/pretrain.py --help
#
# CUDA comes from the torch wheel (torch 2.13.0 on PyPI is built for CUDA 13.0 and brings its own
# CUDA, cuDNN and NCCL libraries), so the base is NVIDIA's smallest CUDA image: it only adds the
# environment the NVIDIA container runtime reads. Nodes need a driver for CUDA 13.0.
FROM nvidia/cuda:13.0.0-base-ubuntu24.04

# Both pins are checked by tests/k8s: TORCH_VERSION against constraints.txt, RAY_VERSION against
# the rayVersion of the KubeRay RayJob (KubeRay requires the image's Ray to match it).
ARG TORCH_VERSION=2.13.0
ARG RAY_VERSION=2.60.0
ARG APP_UID=10001

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A high UID that no host account uses; pods run with runAsNonRoot and this UID.
RUN groupadd --gid ${APP_UID} app \
    && useradd --uid ${APP_UID} --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin app

WORKDIR /app

# torch first and pinned, as in the Makefile, so nothing else picks its version.
RUN python3 -m venv /opt/venv \
    && pip install "torch==${TORCH_VERSION}"

# The project: launchers run `launch/pretrain.py` and read `configs/` relative to /app, so the
# source tree stays here next to the installed package. psycopg2 and boto3 are what the MLflow
# server needs for its PostgreSQL store and S3 artifacts.
COPY pyproject.toml README.md constraints.txt ./
COPY configuration ./configuration
COPY model ./model
COPY pipeline ./pipeline
COPY sharding ./sharding
COPY launch ./launch
COPY configs ./configs
COPY bench ./bench
RUN pip install -c constraints.txt ".[all]" "ray[default]==${RAY_VERSION}" "psycopg2-binary>=2.9" "boto3>=1.34" \
    && python3 -m compileall -q /app /opt/venv

USER ${APP_UID}:${APP_UID}
ENV HOME=/home/app

CMD ["python", "launch/pretrain.py", "--help"]

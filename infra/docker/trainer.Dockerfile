# checkov:skip=CKV_DOCKER_2:batch containers (KFP steps, training jobs, Dataflow workers), not servers: their orchestrator tracks liveness
# checkov:skip=CKV_DOCKER_7:the base image is a build argument whose default is an exact version tag
# The trainer image: `python -m trainer train|evaluate|export` (Vertex AI custom jobs, KFP train step).
# Variants by build argument:
#   cpu (default): BASE_IMAGE=python:3.11.7-slim-bookworm
#   gpu:           BASE_IMAGE=nvidia/cuda:12.5.1-cudnn-runtime-ubuntu22.04 TF_VARIANT=gpu
#   tpu (TPU VM):  TF_VARIANT=tpu (adds libtpu for TPUStrategy on Cloud TPU VMs)
# The gpu and tpu extras come hash-locked from infra/requirements-gpu.lock and infra/requirements-tpu.lock.
ARG BASE_IMAGE=python:3.11.7-slim-bookworm
FROM ${BASE_IMAGE}

ARG TF_VARIANT=cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TF_CPP_MIN_LOG_LEVEL=2

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The CUDA base has no Python 3.11; install it there (the slim base already has it).
RUN if ! command -v python3.11 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3.11=3.11.* python3.11-venv=3.11.* \
      && rm -rf /var/lib/apt/lists/* && ln -sf /usr/bin/python3.11 /usr/local/bin/python; \
    fi

RUN useradd --create-home --uid 10001 bertkeras
WORKDIR /opt/bertkeras
COPY requirements.lock requirements-nodeps.lock infra/requirements-gpu.lock infra/requirements-tpu.lock pyproject.toml README.md ./
RUN case "${TF_VARIANT}" in cpu|gpu|tpu) ;; *) echo "TF_VARIANT must be cpu, gpu or tpu, got ${TF_VARIANT}" >&2; exit 1;; esac \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes -r requirements.lock \
    && /opt/venv/bin/pip install --no-deps --require-hashes -r requirements-nodeps.lock \
    && if [ "${TF_VARIANT}" != "cpu" ]; then /opt/venv/bin/pip install --require-hashes -r "requirements-${TF_VARIANT}.lock"; fi
COPY trainer ./trainer
COPY components ./components
COPY pipelines ./pipelines
# The project itself, built offline by the locked setuptools: nothing outside the hash-checked locks is installed.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation --no-index . && chown -R bertkeras /opt/bertkeras
ENV PATH=/opt/venv/bin:$PATH

USER 10001
ENTRYPOINT ["python", "-m", "trainer"]
CMD ["train", "--help"]

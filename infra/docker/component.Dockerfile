# checkov:skip=CKV_DOCKER_2:batch containers (KFP steps, training jobs, Dataflow workers), not servers: their orchestrator tracks liveness
# The KFP component image: every component of components/kfp_components.py runs here (Beam on DirectRunner
# or launching Dataflow, checkpoint conversion, evaluation, registration). Training on Vertex uses trainer.Dockerfile.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TF_CPP_MIN_LOG_LEVEL=2
RUN useradd --create-home --uid 10001 bertkeras
WORKDIR /opt/bertkeras
COPY requirements.lock requirements-nodeps.lock pyproject.toml README.md ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes -r requirements.lock \
    && /opt/venv/bin/pip install --no-deps --require-hashes -r requirements-nodeps.lock
COPY trainer ./trainer
COPY components ./components
COPY pipelines ./pipelines
# The project itself, built offline by the locked setuptools: nothing outside the hash-checked locks is installed.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation --no-index . && chown -R bertkeras /opt/bertkeras
# KFP's lightweight-component launcher calls `python3`.
ENV PATH=/opt/venv/bin:$PATH

USER 10001

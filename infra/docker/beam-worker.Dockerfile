# checkov:skip=CKV_DOCKER_2:batch containers (KFP steps, training jobs, Dataflow workers), not servers: their orchestrator tracks liveness
# Dataflow worker image (--sdk_container_image): Apache Beam's Python 3.11 SDK image at the SAME Beam version
# as requirements.lock (2.77.0), plus the project and its locked dependencies, so workers run the code the
# launcher pickled.
FROM apache/beam_python3.11_sdk:2.77.0

ENV PIP_NO_CACHE_DIR=1 TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /opt/bertkeras
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --require-hashes -r requirements.lock
COPY trainer ./trainer
COPY components ./components
COPY pipelines ./pipelines
# The project itself, built offline by the locked setuptools: nothing outside the hash-checked lock is installed.
RUN pip install --no-deps --no-build-isolation --no-index . && useradd --create-home --uid 10001 bertkeras && chown -R bertkeras /opt/bertkeras

USER 10001
ENTRYPOINT ["/opt/apache/beam/boot"]

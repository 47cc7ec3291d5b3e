# The two commands of the README: `make demo` and `make test`. Both create .venv when it is
# missing or older than pyproject.toml, install the project into it, then do their job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_WORKDIR ?= demo-work

.PHONY: demo test test-fast test-py313 reliability compile clean bench images image-cpu image-gpu test-images kind-up kind-e2e kind-down

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kfp-finetune demo --workdir $(DEMO_WORKDIR) --summary $(DEMO_WORKDIR)/summary.json

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=10

# Everything except the end-to-end kfp.local runs (marked slow).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# The bad-input, fault and security catalogue (tests marked reliability; also part of make test);
# prints the number of cases per category at the end.
reliability: $(STAMP)
	$(BIN)/python -m pytest -q -m reliability

# test-fast on Python 3.13 (Debian 13 "trixie", built from Debian packages with debootstrap) in a
# container; needs a Docker daemon (and root for debootstrap, first run). See docker/test-py313.sh.
test-py313:
	docker/test-py313.sh

# Performance table of bench/README.md (under 15 minutes on 2 cores); BENCH_ARGS=--quick for fewer repetitions.
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

compile: $(STAMP)
	$(BIN)/kfp-finetune compile -o kfp-finetune.yaml

clean:
	rm -rf $(DEMO_WORKDIR) kfp-local-root kfp-finetune.yaml .pytest_cache

# The component images (docker/Dockerfile), named and tagged as in components/image.py. The base
# image is python:3.11-slim, or where no registry is reachable one built from a Debian mirror
# (docker/build-base.sh); BASE_IMAGE= and PIP_CA_BUNDLE= are passed on (see docker/README.md).
images: image-cpu image-gpu

image-cpu:
	docker/build-image.sh cpu

# 7.9 GB (the CPU image: 3.4 GB): tensorflow[and-cuda] adds the CUDA 12 and cuDNN 9 libraries.
image-gpu:
	docker/build-image.sh gpu

# Not part of `make test`: rebuilds what changed in both images, then runs them (tests marked docker).
test-images: $(STAMP) images
	KFP_FINETUNE_IMAGE_TESTS=1 $(BIN)/python -m pytest -q -m docker tests/test_images.py

# A local kind cluster with standalone KFP, the CPU image and one volume for data and registry
# (docker/kind-up.sh; needs docker, kind, kubectl). KIND_DATA="DIR ..." copies data folders into
# the volume. It stops after setup; port-forward the UI as the last line it prints says.
KIND_DATA ?=
kind-up:
	KFP_FINETUNE_NO_PORT_FORWARD=1 docker/kind-up.sh $(KIND_DATA)

# The demo on that cluster with the kind profile: submits, waits, checks the run succeeded and the
# registry in the volume got a version (tests/test_kind_e2e.py, marked kind).
kind-e2e: $(STAMP) kind-up
	$(BIN)/python -m pytest -q -m kind tests/test_kind_e2e.py

# Deletes the cluster; the volume's host folder (registry and data) stays.
kind-down:
	kind delete cluster --name "$${KFP_FINETUNE_CLUSTER:-kfp-finetune}"

# The two commands of the README: `make demo` and `make test`. Both create .venv when it is
# missing or older than pyproject.toml, install the project into it, then do their job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_WORKDIR ?= demo-work

.PHONY: demo test test-fast test-py313 compile clean bench images image-cpu image-gpu test-images

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

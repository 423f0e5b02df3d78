# stord: `make run` serves on 127.0.0.1:50051 with SQLite in ./stord-data; `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf

.PHONY: venv run test lint proto proto-image bench soak soak-faults fuzz docker image-test clean

$(INSTALLED): pyproject.toml setup.py client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./client -e '.[dev]'
	touch $@

venv: $(INSTALLED)

# LISTEN=HOST:PORT serves elsewhere than 127.0.0.1:50051 (or set STORD_LISTEN).
run: $(INSTALLED)
	$(BIN)/stord serve --log-format console $(if $(LISTEN),--listen $(LISTEN))

$(BUF):
	command -v npm >/dev/null || (apt-get update -q && apt-get install -y -q --no-install-recommends npm)
	npm install --prefix .tools --no-audit --no-fund --loglevel=error @bufbuild/buf@$(BUF_VERSION)

lint: $(INSTALLED) $(BUF)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy server client/stord/client tests bench scripts
	cd protos && ../$(BUF) lint
	cd protos && ../$(BUF) breaking --against stord-v1.binpb

test: lint
	$(BIN)/pytest

# The stateful fuzzers of every contract (tests/fuzz) for longer than `make test` runs them, and randomly:
# FUZZ_EXAMPLES runs of FUZZ_STEPS steps per contract and backend.
FUZZ_EXAMPLES ?= 300
FUZZ_STEPS ?= 40
fuzz: $(INSTALLED)
	STORD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) STORD_FUZZ_STEPS=$(FUZZ_STEPS) $(BIN)/pytest tests/fuzz -q

proto: $(INSTALLED)
	$(BIN)/python scripts/generate_protos.py

# The v1 API as released: `make lint` fails on any breaking change to it. Refresh it only on purpose, after an
# additive change to stord.v1 has landed.
proto-image: $(BUF)
	cd protos && ../$(BUF) build --exclude-source-info -o stord-v1.binpb

# h2load (nghttp2-client) measures unary calls without the Python client's CPU; the bench runs without it too.
bench: $(INSTALLED)
	command -v h2load >/dev/null || (apt-get update -q && apt-get install -y -q --no-install-recommends nghttp2-client) || true
	$(BIN)/python -m bench

# Mixed load on a daemon of its own for SOAK_SECONDS, watching throughput, errors and the daemon's memory
# (not part of `make test`). SOAK_DATABASE: sqlite, postgres (a throwaway server) or a database URL.
SOAK_SECONDS ?= 300
SOAK_DATABASE ?= sqlite
soak: $(INSTALLED)
	$(BIN)/python -m bench.soak --duration $(SOAK_SECONDS) --database $(SOAK_DATABASE)

# The partition and slow-link fault tests, longer (not part of `make test`; needs root for network
# namespaces): SOAK_FAULT_ROUNDS partitions under load, each held SOAK_FAULT_HOLD seconds, a
# SOAK_FAULT_PARTITION-second partition under ingest and job workers, throughput measured SOAK_FAULT_MEASURE s.
SOAK_FAULT_ROUNDS ?= 5
SOAK_FAULT_HOLD ?= 20
SOAK_FAULT_PARTITION ?= 60
SOAK_FAULT_MEASURE ?= 20
soak-faults: $(INSTALLED)
	STORD_FAULTS_ROUNDS=$(SOAK_FAULT_ROUNDS) STORD_FAULTS_HOLD_SECONDS=$(SOAK_FAULT_HOLD) \
	STORD_FAULTS_PARTITION_SECONDS=$(SOAK_FAULT_PARTITION) STORD_FAULTS_MEASURE_SECONDS=$(SOAK_FAULT_MEASURE) \
	$(BIN)/pytest -s -q tests/faults/test_partition.py tests/faults/test_partition_streams.py \
		tests/faults/test_slow_link.py

docker:
	docker build -t stord:latest .

# Build ./Dockerfile with buildah on a Debian base made here and run the image with podman (root; installs the
# tools with apt-get when missing). See README, "Container image", for what it checks.
image-test: $(INSTALLED)
	scripts/image_test.sh

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache

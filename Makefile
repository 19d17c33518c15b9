# sealgate — the two commands are `make run` and `make test`.
CARGO   ?= cargo
PYTHON  ?= python3
RELEASE := target/release
POLICIES := target/policies

.PHONY: all deps build run test test-deps test-rust test-python bench fuzz lint clean

all: build

## deps: toolchain pieces the build needs (idempotent)
deps:
	@command -v rustup >/dev/null && rustup target list --installed | grep -qx wasm32-wasip2 \
		|| rustup target add wasm32-wasip2
	@command -v cargo-nextest >/dev/null || $(CARGO) install --locked cargo-nextest

## build: the gateway binary and the policy components, in release
build: deps
	$(CARGO) build --release -p sealgate

## run: build, then serve on 127.0.0.1:9000 with the data under ./data
run: build
	$(RELEASE)/sealgate serve

## test: install test dependencies, build once in release, run every test
test: build test-deps test-rust test-python

test-deps:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

test-rust:
	$(CARGO) nextest run --release --workspace --no-fail-fast

test-python:
	SEALGATE_BIN=$(CURDIR)/$(RELEASE)/sealgate $(PYTHON) -m pytest -q -n 2 tests/python

## lint: formatting and clippy
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets --workspace -- -D warnings

clean:
	$(CARGO) clean

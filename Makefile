# sealgate — the two commands are `make run` and `make test`.
CARGO   ?= cargo
PYTHON  ?= python3
RELEASE := target/release
POLICIES := target/policies

.PHONY: all deps build policies fixtures run test test-deps test-rust test-python test-python-contract-1 test-python-s3 test-garage soak bench fuzz fuzz-stable lint clean

all: build

## deps: toolchain pieces the build needs (idempotent)
deps:
	@command -v rustup >/dev/null && rustup target list --installed | grep -qx wasm32-wasip2 \
		|| rustup target add wasm32-wasip2
	@command -v cargo-nextest >/dev/null || $(CARGO) install --locked cargo-nextest

## build: the gateway binary and the policy components, in release
build: deps policies
	$(CARGO) build --release -p sealgate

## policies: target/policies/{default,encrypt-all,aws}.wasm (the default one is also embedded in the binary)
## and the SDK example guest/examples/secure-prefix as secure-prefix.wasm
WASM_BUILD := $(CARGO) build --profile wasm --target wasm32-wasip2 --target-dir target/policy-build
WASM_OUT := target/policy-build/wasm32-wasip2/wasm
policies: deps
	@mkdir -p $(POLICIES)
	$(WASM_BUILD) -p sealgate-policy-component
	cp $(WASM_OUT)/sealgate_policy_component.wasm $(POLICIES)/default.wasm
	$(WASM_BUILD) -p sealgate-policy-component --features encrypt-all
	cp $(WASM_OUT)/sealgate_policy_component.wasm $(POLICIES)/encrypt-all.wasm
	$(WASM_BUILD) -p sealgate-policy-component --features aws
	cp $(WASM_OUT)/sealgate_policy_component.wasm $(POLICIES)/aws.wasm
	$(WASM_BUILD) -p sealgate-secure-prefix-policy
	cp $(WASM_OUT)/sealgate_secure_prefix_policy.wasm $(POLICIES)/secure-prefix.wasm

## fixtures: the hostile policy modules the containment tests load
fixtures: deps
	CARGO_TARGET_DIR=target/policy-build guest/fixtures/build.sh

## run: build, then serve on 127.0.0.1:9000 with the data under ./data
run: build
	$(RELEASE)/sealgate serve

## test: install test dependencies, build once in release, run every test
test: build fixtures test-deps test-rust test-python test-python-contract-1 test-python-s3

test-deps:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	@command -v curl >/dev/null && command -v rclone >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq curl rclone)

test-rust:
	$(CARGO) nextest run --release --no-fail-fast

test-python:
	SEALGATE_BIN=$(CURDIR)/$(RELEASE)/sealgate $(PYTHON) -m pytest -q -n 2 tests/python

## The rules suites once more on the default module as built against contract 1.0.0
## (guest/fixtures/contract-1.0.0): the host still runs modules of the previous contract.
CONTRACT_1_SUITES := test_encryption test_copy test_multipart test_post_object test_bucket_keys test_policy_invariants
test-python-contract-1:
	SEALGATE_TEST_POLICY=$(CURDIR)/guest/fixtures/contract-1.0.0/default.wasm SEALGATE_BIN=$(CURDIR)/$(RELEASE)/sealgate \
		$(PYTHON) -m pytest -q -n 2 $(addprefix tests/python/,$(addsuffix .py,$(CONTRACT_1_SUITES)))

## The suites that pass against a SeaweedFS upstream (`--backend s3`), run again that way;
## the others are listed in docs/scale-out.md with what keeps them local.
S3_BACKEND_SUITES := test_objects test_aws_module test_encryption test_persistence test_admin test_policy_swap test_policy_invariants test_tls test_post_object test_multipart test_conditional_range test_copy test_buckets test_awscli test_bad_input test_auth test_kms_backends
## Single tests of suites that are otherwise local-only (their other tests read the data dir).
S3_BACKEND_TESTS := test_hardening.py::test_signed_browser_posts_stream_their_file_into_storage
test-python-s3:
	SEALGATE_TEST_BACKEND=s3 SEALGATE_BIN=$(CURDIR)/$(RELEASE)/sealgate $(PYTHON) -m pytest -q -n 2 \
		$(addprefix tests/python/,$(addsuffix .py,$(S3_BACKEND_SUITES))) $(addprefix tests/python/,$(S3_BACKEND_TESTS))

## test-garage: Garage 2.x as the upstream, three-node clusters with replication factor 3 (cargo install
## --locked garage first when it is missing: about 13 minutes): the scale-out suites and the suites of
## test-python-s3 with Garage in SeaweedFS's place, and tests/python/test_garage.py
GARAGE_VERSION := 2.5.0
GARAGE_SUITES := $(S3_BACKEND_SUITES) test_listing test_scale_out test_scale_out_clients test_garage
test-garage: build test-deps
	@command -v garage >/dev/null || [ -x "$(HOME)/.cargo/bin/garage" ] || \
		$(CARGO) install --locked garage@$(GARAGE_VERSION)
	SEALGATE_TEST_GARAGE=1 SEALGATE_TEST_BACKEND=garage SEALGATE_BIN=$(CURDIR)/$(RELEASE)/sealgate $(PYTHON) -m pytest -q -n 2 \
		$(addprefix tests/python/,$(addsuffix .py,$(GARAGE_SUITES))) $(addprefix tests/python/,$(S3_BACKEND_TESTS))

## soak: the crash/soak harness, SOAK_SECONDS (default 300) of clients writing while the gateway
## is SIGKILLed and restarted; prints counts, fails on any lost or corrupted write (make test runs 60 s)
SOAK_SECONDS ?= 300
soak: build test-deps
	SEALGATE_BIN=$(CURDIR)/$(RELEASE)/sealgate $(PYTHON) tests/soak/soak.py --seconds $(SOAK_SECONDS)

## bench: numbers for BENCHMARKS.md (SEALGATE_BENCH_QUICK=1 for a short run, SEALGATE_BENCH_ONLY=kms, put or scale-out for one table, SEALGATE_BENCH_BASELINE=<an earlier sealgate binary> to measure the put table beside it)
bench: build test-deps
	$(CARGO) build --release -p sealgate-bench
	$(RELEASE)/sealgate-bench | tee target/bench.md

## fuzz: cargo-fuzz (nightly) on the rules, natively and as the built component, the KMIP TTLV decoder
## and the host's parsers (HOST_FUZZ_TARGETS),
## FUZZ_SECONDS each; a broken invariant stops it, the input in fuzz/artifacts/.
## Extra libFuzzer flags in FUZZ_ARGS (e.g. FUZZ_ARGS="-fork=1 -ignore_crashes=1").
## New inputs go to fuzz/target/corpus/ (the committed seeds in fuzz/corpus/
## stay as they are; `make test` replays those natively).
FUZZ_SECONDS ?= 60
## The host's own parsers: stored sealed chunks, wrapped data keys, POST forms, request heads.
HOST_FUZZ_TARGETS := sealed_chunks wrapped_data_key post_form request_head
FUZZ_ARGS ?=
# The fuzz build is on nightly, which need not have the wasm target: the
# gateway library embeds the default module built by `policies` instead.
fuzz: export SEALGATE_DEFAULT_POLICY = $(CURDIR)/$(POLICIES)/default.wasm
fuzz: policies
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	@mkdir -p fuzz/target/corpus/rules fuzz/target/corpus/component
	cd fuzz && $(CARGO) +nightly fuzz run rules target/corpus/rules corpus/rules -- -max_total_time=$(FUZZ_SECONDS) $(FUZZ_ARGS)
	cd fuzz && $(CARGO) +nightly fuzz run component target/corpus/component corpus/component -- -max_total_time=$(FUZZ_SECONDS) $(FUZZ_ARGS)
	@mkdir -p fuzz/target/corpus/ttlv
	cd fuzz && $(CARGO) +nightly fuzz run ttlv target/corpus/ttlv corpus/ttlv -- -max_total_time=$(FUZZ_SECONDS) $(FUZZ_ARGS)
	@for t in $(HOST_FUZZ_TARGETS); do \
		mkdir -p fuzz/target/corpus/$$t && \
		(cd fuzz && $(CARGO) +nightly fuzz run $$t target/corpus/$$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) $(FUZZ_ARGS)) || exit 1; \
	done

## fuzz-stable: where no nightly toolchain is at hand: the component target (the built modules under
## contract 2.0.0, against the native rules) built on stable without coverage instrumentation, so
## libFuzzer mutates blindly. Replays the committed seeds, then FUZZ_SECONDS of mutations; a
## finding lands in fuzz/artifacts/. Weaker than `make fuzz`, which it does not replace.
fuzz-stable: policies
	$(CARGO) build --manifest-path fuzz/Cargo.toml --bin component
	@mkdir -p fuzz/artifacts fuzz/target/corpus/stable
	fuzz/target/debug/component fuzz/target/corpus/stable fuzz/corpus/component fuzz/corpus/rules -artifact_prefix=fuzz/artifacts/ \
		-max_total_time=$(FUZZ_SECONDS) $(FUZZ_ARGS)

## lint: formatting and clippy
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -p sealgate -p sealgate-policy -p sealgate-bench -- -D warnings
	$(CARGO) clippy --profile wasm --target wasm32-wasip2 --target-dir target/policy-build \
		-p sealgate-policy-sdk -p sealgate-policy-component -p sealgate-secure-prefix-policy -- -D warnings

clean:
	$(CARGO) clean

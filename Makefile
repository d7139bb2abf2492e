# Switchboard developer entry points. `make test` is what CI runs (.ci/run).
CARGO ?= cargo
INFRA := e2e/infra


.PHONY: deps test fmt clippy shellcheck unit integration fuzz soak python-test protocol-test bench bench-python bench-operator infra-up infra-down crds demo demo-down node-smoke images node-e2e

## test: formatting, lints, unit tests, then integration tests against a real
## Kafka broker and a real Kubernetes API server (started and stopped here).
test: deps fmt clippy shellcheck unit integration python-test protocol-test

## deps: the Debian packages and rustup components a fresh machine lacks (idempotent;
## a fraction of a second when all are there).
deps:
	$(INFRA)/deps.sh

fmt:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

shellcheck:
	shellcheck e2e/infra/*.sh e2e/*.sh e2e/kind/*.sh e2e/protocol-clients/*.sh python/scripts/*.sh bench/*.sh .ci/run

unit:
	$(CARGO) test --workspace --lib --bins
	$(CARGO) test --workspace --doc

# Compile first so the infrastructure is not left idle during a long build;
# with-infra.sh stops it again on success, failure or interrupt.
integration:
	$(CARGO) test --workspace --test '*' --no-run
	$(INFRA)/with-infra.sh $(CARGO) test --workspace --test '*'

## fuzz: the record-decoding fuzzer (runtime/src/kafka/record_fuzz.rs) at length:
## 10M random records (100k run in `unit`), stopping after 10 minutes at most; the
## test build (overflow checks and debug assertions on). SWITCHBOARD_FUZZ_CASES,
## SWITCHBOARD_FUZZ_SECONDS and SWITCHBOARD_FUZZ_SEED override.
fuzz:
	SWITCHBOARD_FUZZ_CASES=$${SWITCHBOARD_FUZZ_CASES:-10000000} SWITCHBOARD_FUZZ_SECONDS=$${SWITCHBOARD_FUZZ_SECONDS:-600} \
		$(CARGO) test -p switchboard-runtime --lib record_fuzz -- --nocapture

## soak: rounds of replica join/leave churn with a broker restart in each, on a broker
## of the test's own (e2e/tests/soak_churn_restart.rs): fails on any event lost, out of
## order or handled by two replicas at once; prints one JSON line per round. Up to 5
## minutes.
soak:
	$(CARGO) test -p switchboard-e2e --test soak_churn_restart -- --ignored --nocapture

## python-test: the Python package (python/): a venv cached under ~/.cache/switchboard
## (maturin, autogen-core, pytest from PyPI), fmt + clippy of the extension crate, the
## wheel built and installed, then pytest against a real broker (started and stopped here).
python-test:
	python/scripts/test.sh

## protocol-test: the runtime's A2A and MCP servers with the official Python SDKs
## (a2a-sdk, mcp from PyPI, pinned in e2e/protocol-clients/requirements.txt; venv cached
## under ~/.cache/switchboard/protocol-venv) as clients of real runtime processes on a
## real broker (started and stopped here).
protocol-test:
	e2e/protocol-clients/test.sh

## bench: the runtime benchmarks against a local broker (started and stopped here),
## with raw rdkafka baselines measured in the same run; writes bench/results/latest.json
## and ends with a short table of it (ours, raw, ratio).
bench: deps
	$(CARGO) build --release -p switchboard-e2e --bin bench --bin bench_host
	mkdir -p bench/results
	$(INFRA)/with-infra.sh --kafka-only sh -c 'target_dir=$${CARGO_TARGET_DIR:-target}; "$$target_dir/release/bench" all --bootstrap "$$SWITCHBOARD_TEST_KAFKA" --broker-pid "$$($(INFRA)/kafka.sh pid)" > bench/results/latest.json.tmp'
	mv bench/results/latest.json.tmp bench/results/latest.json
	@echo "bench: wrote bench/results/latest.json"
	@"$${CARGO_TARGET_DIR:-target}/release/bench" table bench/results/latest.json

## bench-python: the Python scenarios (python/bench/bench.py: echo RPC between two Python
## processes and events/s to a Python agent, each beside the Rust runtime's figure from
## the same run) against a local broker; writes bench/results/python-latest.json.
bench-python:
	python/scripts/test.sh --bench

## bench-operator: the operator-scale benchmark (200 AgentRuntimes applied at once; the
## switchboard-operator binary as a subprocess) against a local broker and control plane
## (started and stopped here); writes bench/results/operator-latest.json.
bench-operator: deps
	$(CARGO) build --release -p switchboard-e2e -p switchboard-operator --bin bench --bin switchboard-operator
	mkdir -p bench/results
	$(INFRA)/with-infra.sh sh -c 'target_dir=$${CARGO_TARGET_DIR:-target}; "$$target_dir/release/bench" operator-scale --bootstrap "$$SWITCHBOARD_TEST_KAFKA" --kubeconfig "$$KUBECONFIG" > bench/results/operator-latest.json.tmp'
	mv bench/results/operator-latest.json.tmp bench/results/operator-latest.json
	@echo "bench: wrote bench/results/operator-latest.json"

## crds: the CRD YAML generated from crds/src, and its byte-identical copies in the
## chart and the kustomize base (e2e/tests/packaging.rs checks they agree).
crds:
	$(CARGO) run -p switchboard-crds --bin crdgen -- --out-dir crds
	cp crds/*.yaml charts/switchboard/crds/
	cp crds/*.yaml manifests/crds/

## demo: Kafka + control plane + operator + node agent, applies examples/demo/ and
## runs a scripted conversation; leaves it all running. demo-down stops it.
demo:
	e2e/demo.sh up

demo-down:
	e2e/demo.sh down

## infra-up / infra-down: keep Kafka and the control plane running while you work.
## node-smoke: opt-in (root; not part of `test`): Kafka, the control plane and a
## real worker node (e2e/infra/node.sh), then the node's smoke test, then all stopped.
node-smoke:
	$(INFRA)/deps.sh --node
	$(INFRA)/with-infra.sh --node $(INFRA)/node.sh smoke

## images: opt-in (root): builds the switchboard-runtime and switchboard-operator
## images from runtime/Dockerfile and operator/Dockerfile with buildah, offline, on
## locally assembled bases (e2e/infra/images.sh); loads them into a running node.
images:
	$(INFRA)/deps.sh --images
	$(INFRA)/images.sh build

## node-e2e: opt-in (root, after `make images`): the e2e suite against the real
## node, with the operator installed in-cluster by the chart from our images.
node-e2e:
	$(INFRA)/deps.sh --node --images
	$(INFRA)/with-infra.sh --node $(INFRA)/node-e2e.sh

infra-up:
	$(INFRA)/kafka.sh start
	$(INFRA)/cluster.sh start
	@echo "export SWITCHBOARD_TEST_KAFKA=$$($(INFRA)/kafka.sh bootstrap) KUBECONFIG=$$($(INFRA)/cluster.sh kubeconfig)"

infra-down:
	-$(INFRA)/cluster.sh stop
	-$(INFRA)/kafka.sh stop

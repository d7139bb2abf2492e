# Switchboard developer entry points. `make test` is what CI runs (.ci/run).
CARGO ?= cargo
INFRA := e2e/infra


.PHONY: test fmt clippy shellcheck unit integration infra-up infra-down crds

## test: formatting, lints, unit tests, then integration tests against a real
## Kafka broker and a real Kubernetes API server (started and stopped here).
test: fmt clippy shellcheck unit integration

fmt:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

shellcheck:
	shellcheck e2e/infra/*.sh .ci/run

unit:
	$(CARGO) test --workspace --lib --bins
	$(CARGO) test --workspace --doc

# Compile first so the infrastructure is not left idle during a long build;
# with-infra.sh stops it again on success, failure or interrupt.
integration:
	$(CARGO) test --workspace --test '*' --no-run
	$(INFRA)/with-infra.sh $(CARGO) test --workspace --test '*'

## infra-up / infra-down: keep Kafka and the control plane running while you work.
infra-up:
	$(INFRA)/kafka.sh start
	$(INFRA)/cluster.sh start
	@echo "export SWITCHBOARD_TEST_KAFKA=$$($(INFRA)/kafka.sh bootstrap) KUBECONFIG=$$($(INFRA)/cluster.sh kubeconfig)"

infra-down:
	-$(INFRA)/cluster.sh stop
	-$(INFRA)/kafka.sh stop

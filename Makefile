export CARGO_TARGET_DIR ?= $(HOME)/.cache/skiff/target
CARGO ?= cargo

.PHONY: test
test:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace

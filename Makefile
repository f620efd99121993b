# skiff: `make demo` and `make test` work on a fresh Debian 12 machine as root.
# Build output and test images live outside the clone, under ~/.cache/skiff.

export CARGO_TARGET_DIR ?= $(HOME)/.cache/skiff/target
export SKIFF_CACHE ?= $(HOME)/.cache/skiff
CARGO ?= cargo

# System packages the tests and the demo use.
DEB_PACKAGES := docker-registry skopeo umoci debootstrap fuse3 python3 \
	python3-cryptography ca-certificates curl gzip tar jq gcc libc6-dev make \
	libseccomp-dev seccomp pkg-config runc hostname \
	e2fsprogs util-linux bsdutils containerd protobuf-compiler podman \
	containernetworking-plugins qemu-utils qemu-system-x86 cpio binutils \
	clang lld wasi-libc libclang-rt-14-dev-wasm32
# (vm/minimal-kernel.sh installs the kernel source and its build tools
# itself, for `make agent` only.)

.PHONY: all build release deps rust images agent wasm test lint unit demo bench clean

all: build

deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@$(MAKE) --no-print-directory rust

rust:
	@if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$(HOME)/.cargo/bin/cargo" ]; then \
		echo "installing Rust with rustup"; \
		curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt -c clippy; \
	fi

build: deps
	$(CARGO) build --workspace

release: deps
	$(CARGO) build --release -p skiff

# The real multi-layer Debian test image (debootstrap + umoci), cached.
images: deps
	bash tests/images/build-debian.sh >/dev/null

# The VM guest: its agent, a static binary built in a target directory of
# its own (its flags would otherwise rebuild the workspace); skiff's
# minimal guest kernel (built once from Debian's kernel source, the
# default); and Debian's generic kernel with the modules the guest loads
# (the fallback, and a test of its own).
AGENT_TARGET := $(SKIFF_CACHE)/agent-target
agent: deps
	CARGO_TARGET_DIR=$(AGENT_TARGET) RUSTFLAGS="-C target-feature=+crt-static" \
		$(CARGO) build --release -p skiff-agent --target x86_64-unknown-linux-gnu
	strip -o $(AGENT_TARGET)/skiff-agent $(AGENT_TARGET)/x86_64-unknown-linux-gnu/release/skiff-agent
	bash vm/guest-kernel.sh >/dev/null
	bash vm/minimal-kernel.sh >/dev/null

# The Wasm sandbox's runner: a static binary with wasmtime, built on its
# own (crates/wasm-runner is outside the workspace, so workspace builds
# never compile wasmtime). Replaced by a rename: a running one stays. Its
# tests are crates/cli/tests/wasm.rs, which drive it through skiff.
WASM_TARGET := $(SKIFF_CACHE)/wasm-target
WASM_RUNNER_DIR := crates/wasm-runner
wasm: deps
	cd $(WASM_RUNNER_DIR) && CARGO_TARGET_DIR=$(WASM_TARGET) RUSTFLAGS="-C target-feature=+crt-static" \
		$(CARGO) build --release --locked --target x86_64-unknown-linux-gnu
	cp $(WASM_TARGET)/x86_64-unknown-linux-gnu/release/skiff-wasm $(WASM_TARGET)/.skiff-wasm.new
	mv $(WASM_TARGET)/.skiff-wasm.new $(WASM_TARGET)/skiff-wasm

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@# With the release build's flags, to share its dependencies' builds.
	cd $(WASM_RUNNER_DIR) && $(CARGO) fmt --check && \
		CARGO_TARGET_DIR=$(WASM_TARGET) RUSTFLAGS="-C target-feature=+crt-static" \
		$(CARGO) clippy --release --locked --all-targets --target x86_64-unknown-linux-gnu -- -D warnings

test: deps images agent wasm lint
	$(CARGO) test --workspace
	@# The cold-start harness (issue 5), one quick iteration over a shaped
	@# link on the tests' build of skiff; it checks every path gave a number.
	$(CARGO) build -p skiff --example cri_run
	SKIFF_BIN=$(CARGO_TARGET_DIR)/debug/skiff bash bench/run.sh --smoke

demo: release images
	bash scripts/demo.sh

bench: release images
	$(CARGO) build --release -p skiff --example cri_run
	bench/convert.py
	bench/mount.py
	bench/run.py
	bench/run.sh

clean:
	rm -rf $(CARGO_TARGET_DIR)

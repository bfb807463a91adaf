# chameleon: `make demo` sets everything up and runs the demo; `make test` runs every check CI runs.
# Both install what is missing (Debian: cmake, clang, libclang for bindgen) and fetch the models they
# need (sha256-verified, cached in ~/.cache/chameleon/models).

SHELL := /bin/bash
CARGO ?= cargo
# the dev profile is optimised (see Cargo.toml) and llama.cpp is always built in Release, so demo and
# tests share one build of llama.cpp
RUN := $(CARGO) run --quiet --

.PHONY: demo test setup models check lint bench clean-models

demo: setup models
	$(CARGO) build
	$(RUN) info
	@echo
	$(RUN) generate --prompt "Suggest a film for a rainy evening, in two sentences." --max-tokens 80

test: setup
	models/fetch.sh smollm2-135m gemma3-270m
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test -- --test-threads=2

setup:
	@missing=(); \
	command -v cmake >/dev/null || missing+=(cmake); \
	command -v clang >/dev/null || missing+=(clang); \
	ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || missing+=(libclang-dev); \
	command -v python3 >/dev/null || missing+=(python3 python3-pip); \
	if [ $${#missing[@]} -gt 0 ]; then \
		echo "installing: $${missing[*]}" >&2; \
		sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq "$${missing[@]}"; \
	fi

models:
	models/fetch.sh smollm2-135m

bench: setup
	models/fetch.sh smollm2-135m
	$(CARGO) bench --bench engine

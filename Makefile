# chameleon: `make demo` sets everything up and runs the demo; `make test` runs every check CI runs.
# Both install what is missing (Debian: cmake, clang, libclang for bindgen; libssl-dev for SQLCipher's
# crypto, libdbus-1-dev for the keystore) and fetch the models they
# need (sha256-verified, cached in ~/.cache/chameleon/models).

SHELL := /bin/bash
CARGO ?= cargo
# the dev profile is optimised (see Cargo.toml) and llama.cpp is always built in Release, so demo and
# tests share one build of llama.cpp
RUN := $(CARGO) run --quiet --

.PHONY: demo test setup models check lint bench clean-models

DEMO_DB := target/demo/chameleon.db
# `auto`: Maya's way of answering is chosen on her five newest history items, held out
DEMO_FIT := --route auto --seed 1

demo: setup models
	$(CARGO) build
	$(RUN) info
	@rm -rf target/demo
	$(RUN) --db $(DEMO_DB) user add maya
	$(RUN) --db $(DEMO_DB) history import --user maya demo/maya.jsonl
	$(RUN) --db $(DEMO_DB) fit --user maya $(DEMO_FIT)
	@echo; $(RUN) --db $(DEMO_DB) user show maya
	@for p in "Recommend a film for tonight." "What should I read next?" "Plan my Saturday."; do \
		echo; echo "### $$p"; \
		$(RUN) --db $(DEMO_DB) generate --user maya --compare --max-tokens 60 --prompt "$$p" || exit 1; \
	done

test: setup
	models/fetch.sh smollm2-135m gemma3-270m
	@# the keystore test runs a real Secret Service (gnome-keyring) in a private D-Bus session
	@command -v dbus-run-session >/dev/null && command -v gnome-keyring-daemon >/dev/null || { \
		sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq dbus-daemon gnome-keyring; }
	@# the server's tests drive it with the official `openai` client, kept inside target/
	@PYTHONPATH=target/pydeps python3 -c 'import openai' 2>/dev/null || \
		python3 -m pip install --quiet --disable-pip-version-check --no-warn-conflicts --root-user-action=ignore --target target/pydeps openai
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test -- --test-threads=2

setup:
	@missing=(); \
	command -v cmake >/dev/null || missing+=(cmake); \
	command -v clang >/dev/null || missing+=(clang); \
	dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev); \
	command -v pkg-config >/dev/null || missing+=(pkg-config); \
	dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev); \
	dpkg -s libdbus-1-dev >/dev/null 2>&1 || missing+=(libdbus-1-dev); \
	python3 -m pip --version >/dev/null 2>&1 || missing+=(python3 python3-pip); \
	if [ $${#missing[@]} -gt 0 ]; then \
		echo "installing: $${missing[*]}" >&2; \
		sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq "$${missing[@]}"; \
	fi

models:
	models/fetch.sh smollm2-135m

bench: setup
	models/fetch.sh smollm2-135m
	$(CARGO) bench --profile dev --bench engine --bench store --bench batch

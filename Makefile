# soxbms: `make run` and `make test` work on a fresh machine (they install into .venv first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUILD := build
PORT ?=

.PHONY: install run test lint bench firmware flash clean

install: $(STAMP)

# Pinned: versions in pyproject.toml, every transitive package in constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[board,broker,truth,train,dev]'
	touch $(STAMP)

run: install
	$(BIN)/soxbms --state run run

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	bash tests/typecheck_firmware.sh

test: lint
	$(BIN)/pytest -q

bench: install
	mkdir -p $(BUILD)
	$(BIN)/soxbms bench link --json $(BUILD)/bench-link.json
	$(BIN)/soxbms bench hil --json $(BUILD)/bench-hil.json
	$(BIN)/soxbms bench soc --json $(BUILD)/bench-soc.json

# Cross-compile every firmware module to .mpy, laid out as on the board's filesystem.
firmware: install
	$(BIN)/python -m hil.firmware_build $(BUILD)/firmware

# make flash PORT=/dev/ttyUSB0 (then put the board's config.json at / with mpremote cp)
flash: firmware
	@test -n "$(PORT)" || { echo "usage: make flash PORT=/dev/ttyUSB0"; exit 2; }
	cd $(BUILD)/firmware && ../../$(BIN)/mpremote connect $(PORT) fs cp -r . : + reset

clean:
	rm -rf $(BUILD) run .pytest_cache .mypy_cache .ruff_cache

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

# make flash PORT=/dev/ttyUSB0 [CONFIG=config.json]: the firmware, and the model files the config's "sox" section
# names into the board's /models (then put the config at / with mpremote cp CONFIG :/config.json).
CONFIG ?= firmware/config.example.json

# The files of a config's "sox" section (each key's default where it names none: app/configschema.py), found by
# file name in models/board/ or models/nn/, copied into argv[2]: the board's /models as a folder.
define FLASH_MODELS
import json, shutil, sys
from pathlib import Path, PurePosixPath
sys.path.insert(0, "firmware")
from app.configschema import SOX_SCHEMA
config, out = Path(sys.argv[1]), Path(sys.argv[2])
sox = json.loads(config.read_text()).get("sox")
if sox is None:
    print(f"{config}: no sox section, so no model files (the board will not estimate)")
for key, spec in SOX_SCHEMA.items() if sox is not None else ():
    board_path = PurePosixPath(sox.get(key, spec[2]) or sys.exit(f"{config}: sox has no {key}"))
    if board_path.parent != PurePosixPath("/models"):
        sys.exit(f"{config}: sox {key} {board_path}: flash puts the model files in /models")
    found = [d / board_path.name for d in (Path("models/board"), Path("models/nn")) if (d / board_path.name).exists()]
    if not found:
        sys.exit(f"{config}: sox {key} {board_path.name} is in neither models/board nor models/nn")
    shutil.copy(found[0], out / board_path.name)
    print(f"{found[0]} -> {board_path}")
endef
export FLASH_MODELS

flash: firmware
	@test -n "$(PORT)" || { echo "usage: make flash PORT=/dev/ttyUSB0 [CONFIG=config.json]"; exit 2; }
	rm -rf $(BUILD)/models && mkdir -p $(BUILD)/models
	$(BIN)/python -c "$$FLASH_MODELS" $(CONFIG) $(BUILD)/models
	cd $(BUILD)/firmware && ../../$(BIN)/mpremote connect $(PORT) fs cp -r . : + fs cp -r ../models : + reset

clean:
	rm -rf $(BUILD) run .pytest_cache .mypy_cache .ruff_cache

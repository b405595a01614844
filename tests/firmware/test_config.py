"""Board configuration: the shipped example parses, and every mistake gets a clear error (under
MicroPython, where it runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.mpy import run_mpy

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
HIL_OK = {"device_id": "bms-01", "cells": 16, "hal": "hil", "hil": {"port": "/dev/pts/3"},
          "broker": {"host": "127.0.0.1"}}


def load(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.json"
    path.write_text(text)
    return run_mpy(f"""
from app import config
try:
    cfg = config.load({str(path)!r})
    print("OK", cfg["device_id"], cfg["sample_period_ms"], cfg["broker"]["port"], cfg["broker"]["keepalive_s"])
except config.ConfigError as e:
    print("ERROR", e)
""").strip()


def test_example_config_parses(tmp_path: Path) -> None:
    out = load(tmp_path, (FIRMWARE / "config.example.json").read_text())
    assert out == "OK bms-01 1000 1883 15"


@pytest.mark.parametrize("change, message", [
    ({"cells": 0}, "'cells' = 0 is invalid, expected 1..32"),
    ({"cells": "16"}, "'cells' must be of type int"),
    ({"device_id": "bms/01"}, "'device_id' = 'bms/01' is invalid"),
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"hal": "hil", "hil": None}, "'hil' must be of type dict"),
    ({"broker": {"host": "h", "keepalive_s": 60}},
     "config.json.broker: 'keepalive_s' = 60 is invalid, expected 1..20 s"),
    ({"hal": "board"}, "hal 'board' needs a 'board' section"),
    ({"sox": {"estimator": "/models/estimator.json"}}, "config.json.sox: missing required key 'cell_model'"),
    ({"sox": {"cell_model": 7}}, "config.json.sox: 'cell_model' must be of type str"),
    ({"sox": {"cell_model": "m.json", "nn": "x"}}, "config.json.sox: unknown key 'nn'"),
    ({"mqtt_inflight": 0}, "'mqtt_inflight' = 0 is invalid, expected > 0 messages"),
])
def test_mistakes_are_named(tmp_path: Path, change: dict, message: str) -> None:
    out = load(tmp_path, json.dumps({**HIL_OK, **change}))
    assert out.startswith("ERROR") and message in out, out


def test_missing_key_and_bad_json(tmp_path: Path) -> None:
    cfg = dict(HIL_OK)
    del cfg["broker"]
    assert "missing required key 'broker'" in load(tmp_path, json.dumps(cfg))
    assert "is not valid JSON" in load(tmp_path, "{device_id: bms}")


def test_sox_section_defaults_and_its_absence(tmp_path: Path) -> None:
    """Without a "sox" section there is no estimation (None); with one, the files not named get their defaults."""
    path = tmp_path / "config.json"
    out = []
    for extra in ({}, {"sox": {"cell_model": "/models/panasonic_ncr18650pf_25C.json"}}):
        path.write_text(json.dumps({**HIL_OK, **extra}))
        out.append(json.loads(run_mpy(f"""
import json
from app import config
cfg = config.load({str(path)!r})
print(json.dumps([cfg["sox"], cfg["mqtt_inflight"]]))
""").strip()))
    assert out[0] == [None, 32]
    assert out[1] == [{"cell_model": "/models/panasonic_ncr18650pf_25C.json", "estimator": "/models/estimator.json",
                       "nn_model": "/models/soc_mlp.board.json", "safety": "/models/safety.json"}, 32]


def test_the_schema_leaves_the_heap_after_loading(tmp_path: Path) -> None:
    """app/configschema.py is needed once: after load() it is gone from sys.modules and from the package."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(HIL_OK))
    out = run_mpy(f"""
import sys
import app
from app import config
cfg = config.load({str(path)!r})
print("app.configschema" in sys.modules, hasattr(app, "configschema"), cfg["device_id"])
""").strip()
    assert out == "False False bms-01"

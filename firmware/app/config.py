# Board configuration from a JSON file on the board's filesystem, validated with clear errors.
# Example (firmware/config.example.json):
#   {"device_id": "bms-01", "cells": 16, "sample_period_ms": 1000, "hal": "hil",
#    "hil": {"port": "/dev/ttyUSB0"},
#    "broker": {"host": "192.168.1.10", "port": 1883, "user": "bms-01", "password": "..."},
#    "data_dir": "/data", "queue_capacity": 4096,
#    "sox": {"cell_model": "/models/panasonic_ncr18650pf_25C.json"}}
# Without a "sox" section the board samples and sends without estimating (engine/sox.py).
# The schema and its checks (app/configschema.py) are needed once, at start: load() imports them and
# drops them again, so their code does not stay in the board's heap (~9 KB on the unix port).

import json
import sys


class ConfigError(ValueError):
    pass


def load(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("cannot read config file " + path + ": " + str(e)) from None
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ConfigError(path + " is not valid JSON: " + str(e)) from None
    from app import configschema

    try:
        return configschema.parse(raw, path)
    finally:
        del sys.modules["app.configschema"]
        del sys.modules["app"].configschema


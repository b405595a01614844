# Schema of the board configuration (app/config.py loads it) and its checks, with clear errors.

from app.config import ConfigError
from soxcommon import wire

# key: (type, required, default, check, what the check wants)
_INT = "int"
_STR = "str"
_DICT = "dict"
_BOOL = "bool"


def _positive(v):
    return v > 0


def _non_negative(v):
    return v >= 0


def _cell_count(v):
    return 0 < v <= wire.MAX_CELLS


def _hal(v):
    return v in ("hil", "board")


def _port(v):
    return 0 < v < 65536


def _keepalive(v):
    return 0 < v <= 20


SCHEMA = {
    "device_id": (_STR, True, None, wire.valid_device_id, "1-32 letters, digits, '-' or '_'"),
    "cells": (_INT, True, None, _cell_count, "1.." + str(wire.MAX_CELLS)),
    "sample_period_ms": (_INT, False, 1000, _positive, "> 0"),
    "hal": (_STR, False, "hil", _hal, "'hil' or 'board'"),
    "lockstep": (_BOOL, False, False, None, ""),
    "pace_ms": (_INT, False, 0, _non_negative, ">= 0 (lockstep: wall-time pause between samples)"),
    "max_samples": (_INT, False, 0, _non_negative, ">= 0 (0 = run forever)"),
    "data_dir": (_STR, False, "/data", None, ""),
    "queue_capacity": (_INT, False, 4096, _positive, "> 0 records"),
    "send_window": (_INT, False, 256, _positive, "> 0 records sent but not yet committed"),
    # QoS 1 messages sent and not yet acknowledged by the broker: each is held in RAM for a resend (a 16-cell data
    # message with estimates is ~0.9 KB). 8 keep a board far ahead of its sample rate on a LAN.
    "mqtt_inflight": (_INT, False, 32, _positive, "> 0 messages"),
    "ack_timeout_ms": (_INT, False, 5000, _positive, "> 0"),
    "persist_interval_ms": (_INT, False, 1000, _non_negative, ">= 0"),
    "watchdog_ms": (_INT, False, 10000, _positive, "> 0"),
    "heartbeat_path": (_STR, False, None, None, ""),  # unix port: the supervisor's watchdog file
    "hil": (_DICT, False, None, None, ""),
    "board": (_DICT, False, None, None, ""),
    "broker": (_DICT, True, None, None, ""),
    "sox": (_DICT, False, None, None, ""),
}
BROKER_SCHEMA = {
    "host": (_STR, True, None, None, ""),
    "port": (_INT, False, 1883, _port, "1..65535"),
    "user": (_STR, False, None, None, ""),
    "password": (_STR, False, None, None, ""),
    "keepalive_s": (_INT, False, 15, _keepalive, "1..20 s"),
}
# The estimators' files (models/board/ and models/nn/ of the repository, copied to the board).
SOX_SCHEMA = {
    "cell_model": (_STR, True, None, None, ""),
    "estimator": (_STR, False, "/models/estimator.json", None, ""),
    "nn_model": (_STR, False, "/models/soc_mlp.board.json", None, ""),
    "safety": (_STR, False, "/models/safety.json", None, ""),
}
HIL_SCHEMA = {
    "port": (_STR, True, None, None, ""),
    "timeout_ms": (_INT, False, 500, _positive, "> 0"),
}


def _current_unit(v):
    return v in (100, 1000, 10000, 100000)


# hal "board": TI BQ76952 on I2C, sensor front-end on a UART (drivers/board_hal.py). The pins are
# required: on an ESP32 the UART1 default pins clash with the flash chip.
BOARD_SCHEMA = {
    "i2c_id": (_INT, False, 0, _non_negative, ">= 0"),
    "i2c_scl": (_INT, True, None, _non_negative, "a pin number"),
    "i2c_sda": (_INT, True, None, _non_negative, "a pin number"),
    "i2c_freq": (_INT, False, 400000, _positive, "> 0 Hz"),
    "bq_addr": (_INT, False, 8, _positive, "a 7-bit I2C address"),
    "thermistors": (_STR, False, "TS1,TS3", None, ""),
    "vc_inputs": (_STR, False, None, None, ""),
    "current_unit_uA": (_INT, False, 1000, _current_unit, "100, 1000, 10000 or 100000 (the BQ76952 userA)"),
    "uart_id": (_INT, False, 1, _non_negative, ">= 0"),
    "uart_tx": (_INT, True, None, _non_negative, "a pin number"),
    "uart_rx": (_INT, True, None, _non_negative, "a pin number"),
    "uart_baud": (_INT, False, 115200, _positive, "> 0"),
    "timeout_ms": (_INT, False, 200, _positive, "> 0"),
}


def _type_ok(kind, value):
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _STR:
        return isinstance(value, str)
    if kind == _BOOL:
        return isinstance(value, bool)
    return isinstance(value, dict)


def _validate(raw, schema, where):
    if not isinstance(raw, dict):
        raise ConfigError(where + ": expected a JSON object")
    for key in raw:
        if key not in schema:
            raise ConfigError(where + ": unknown key '" + key + "'")
    out = {}
    for key, (kind, required, default, check, wants) in schema.items():
        if key not in raw:
            if required:
                raise ConfigError(where + ": missing required key '" + key + "'")
            out[key] = default
            continue
        value = raw[key]
        if not _type_ok(kind, value):
            raise ConfigError(where + ": '" + key + "' must be of type " + kind)
        if check is not None and not check(value):
            raise ConfigError(where + ": '" + key + "' = " + repr(value) + " is invalid, expected " + wants)
        out[key] = value
    return out


def parse(raw, where="config"):
    cfg = _validate(raw, SCHEMA, where)
    cfg["broker"] = _validate(cfg["broker"], BROKER_SCHEMA, where + ".broker")
    if cfg["sox"] is not None:
        cfg["sox"] = _validate(cfg["sox"], SOX_SCHEMA, where + ".sox")
    if cfg["hal"] == "hil":
        if cfg["hil"] is None:
            raise ConfigError(where + ": hal 'hil' needs a 'hil' section with the serial 'port'")
        cfg["hil"] = _validate(cfg["hil"], HIL_SCHEMA, where + ".hil")
    else:
        if cfg["board"] is None:
            raise ConfigError(where + ": hal 'board' needs a 'board' section (I2C and UART pins)")
        cfg["board"] = _validate(cfg["board"], BOARD_SCHEMA, where + ".board")
    return cfg



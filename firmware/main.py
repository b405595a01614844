# Board entry point. On a board: /config.json. On the unix port:
#   micropython firmware/main.py CONFIG.json

import sys

from app import config
from app.node import Node
from drivers.watchdog import Watchdog


def make_hal(cfg):
    if cfg["hal"] == "hil":
        from drivers.hil_hal import HilHal

        hil = cfg["hil"]
        return HilHal(hil["port"], cfg["cells"], hil["timeout_ms"])
    import machine

    from drivers.board_hal import BoardHal

    b = cfg["board"]
    i2c = machine.I2C(b["i2c_id"], scl=machine.Pin(b["i2c_scl"]), sda=machine.Pin(b["i2c_sda"]), freq=b["i2c_freq"])
    # rxbuf holds a whole 16-cell sample reply (405 bytes) even if the loop is late to read it.
    uart = machine.UART(b["uart_id"], baudrate=b["uart_baud"], tx=b["uart_tx"], rx=b["uart_rx"], rxbuf=1024)
    return BoardHal(i2c, uart, cfg["cells"], thermistors=b["thermistors"], vc_inputs=b["vc_inputs"],
                    bq_addr=b["bq_addr"], current_unit_uA=b["current_unit_uA"], timeout_ms=b["timeout_ms"])


def main(path):
    try:
        cfg = config.load(path)
    except config.ConfigError as e:
        print("config error:", e)
        sys.exit(2)
    node = Node(cfg, make_hal(cfg), Watchdog(cfg["watchdog_ms"], cfg["heartbeat_path"]))
    node.run()


main(sys.argv[1] if len(sys.argv) > 1 else "/config.json")

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
    from drivers.board_hal import BoardHal

    return BoardHal(cfg["cells"])


def main(path):
    try:
        cfg = config.load(path)
    except config.ConfigError as e:
        print("config error:", e)
        sys.exit(2)
    node = Node(cfg, make_hal(cfg), Watchdog(cfg["watchdog_ms"], cfg["heartbeat_path"]))
    node.run()


main(sys.argv[1] if len(sys.argv) > 1 else "/config.json")

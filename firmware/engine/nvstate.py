# Small persistent state (boot counter, MQTT session counter), written atomically: a temporary
# file carrying a CRC-32 of its JSON text, then a rename, so a power cut leaves either the old or
# the new file, and a damaged file is detected instead of trusted.

import binascii
import json
import os


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class NvState:
    def __init__(self, path, defaults):
        self.path = path
        self.values = dict(defaults)
        self.damaged = False
        try:
            with open(path) as f:
                crc_hex, _, text = f.read().partition(" ")
            if int(crc_hex, 16) != binascii.crc32(text.encode()):
                raise ValueError("CRC mismatch")
            self.values.update(json.loads(text))
        except OSError:
            pass  # first start
        except ValueError:
            self.damaged = True

    def save(self):
        text = json.dumps(self.values)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write("%08x %s" % (binascii.crc32(text.encode()), text))
        os.rename(tmp, self.path)

"""Device registry and broker credentials: one broker user per board, an ACL by which a board may
write only its own topics (soxbms/v1/<its id>/...) and read only its own ack and command topics,
and one host user that reads and writes the whole tree."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from host.store.sql import SqlStore
from soxcommon import wire

HOST_USER = "soxbms-host"
BOARD_WRITES = ("birth", "data", "state", "event", "death")
BOARD_READS = ("ack", "cmd/#")


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str


def hash_password(user: str, password: str) -> str:
    """Mosquitto's own password hash, made by its mosquitto_passwd tool."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        raise RuntimeError("mosquitto_passwd not found: install Debian's mosquitto package")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pw"
        path.write_text("")
        subprocess.run([tool, "-b", str(path), user, password], check=True, capture_output=True)
        line = path.read_text().strip()
    name, _, hashed = line.partition(":")
    if name != user or not hashed:
        raise RuntimeError("mosquitto_passwd wrote an unexpected line")
    return hashed


def host_credentials(state_dir: Path) -> Credentials:
    """The host's broker credentials, made once per state folder and kept private (mode 600)."""
    path = state_dir / "host-credentials.json"
    if path.exists():
        raw = json.loads(path.read_text())
        return Credentials(raw["user"], raw["password"])
    state_dir.mkdir(parents=True, exist_ok=True)
    creds = Credentials(HOST_USER, secrets.token_urlsafe(18))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"user": creds.user, "password": creds.password}, f)
    return creds


def add_device(store: SqlStore, device: str) -> Credentials:
    if not wire.valid_device_id(device):
        raise ValueError(f"invalid device id {device!r}: 1-{wire.DEVICE_ID_MAX} letters, digits, '-' or '_'")
    if device == HOST_USER:
        raise ValueError(f"{HOST_USER} is reserved for the host")
    if device in store.registered():
        raise ValueError(f"device {device} is already registered")
    password = secrets.token_urlsafe(18)
    store.add_device(device, hash_password(device, password))
    return Credentials(device, password)


def acl_text() -> str:
    lines = ["# written by soxbms: boards write only their own topics (%u = the board's user name)"]
    lines += [f"pattern write {wire.TOPIC_ROOT}/%u/{kind}" for kind in BOARD_WRITES]
    lines += [f"pattern read {wire.TOPIC_ROOT}/%u/{kind}" for kind in BOARD_READS]
    lines += ["", f"user {HOST_USER}", f"topic readwrite {wire.TOPIC_ROOT}/#", "topic read $SYS/#"]
    return "\n".join(lines) + "\n"


def write_broker_auth(state_dir: Path, store: SqlStore) -> tuple[Path, Path]:
    """(password file, ACL file) for Mosquitto from the registry; Mosquitto re-reads them on SIGHUP."""
    host = host_credentials(state_dir)
    pw_path = state_dir / "mosquitto.passwd"
    acl_path = state_dir / "mosquitto.acl"
    lines = [f"{HOST_USER}:{hash_password(HOST_USER, host.password)}"]
    lines += [f"{device}:{hashed}" for device, hashed in store.device_credentials()]
    for path, text in ((pw_path, "\n".join(lines) + "\n"), (acl_path, acl_text())):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o600)
        tmp.replace(path)
    return pw_path, acl_path

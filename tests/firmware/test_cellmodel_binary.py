"""The board cell model's binary companion (<name>.bin, written by host.boardmodel, read by engine/cellmodel.py's
read()): the shipped companions are those of their JSON files, the board reads the same model from either file bit
for bit, and every kind of damage is refused with an error naming the file."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from host import boardmodel
from tests.mpy import run_mpy

BOARD = Path(__file__).resolve().parents[2] / "models" / "board"
COMPANIONS = sorted(BOARD.glob("*.bin"))
HEADER = struct.calcsize(boardmodel.BINARY_HEADER)


def test_the_shipped_companions_are_those_of_their_json_files() -> None:
    # The heap bench's cell (the NN's, hil/bench_heap.py) is read from its companion on the board.
    assert BOARD / "chen2020_spme_fit.bin" in COMPANIONS
    for path in COMPANIONS:
        source = path.with_suffix(".json")
        assert path.read_bytes() == boardmodel.binary_model(source.read_bytes()), \
            f"{path.name} is stale: python -m host.boardmodel --binary {source.relative_to(BOARD.parents[1])}"


def test_the_cli_writes_the_companion(tmp_path: Path) -> None:
    board = tmp_path / "cell.json"
    board.write_bytes((BOARD / "panasonic_ncr18650pf_25C.json").read_bytes())
    boardmodel.main(["--binary", str(board)])
    assert (tmp_path / "cell.bin").read_bytes() == (BOARD / "panasonic_ncr18650pf_25C.bin").read_bytes()
    # From a cell file: the board model and its companion.
    made = tmp_path / "made" / "board.json"
    boardmodel.main([str(BOARD.parent / "cells" / "panasonic_ncr18650pf_25C.json"), str(made)])
    assert made.with_suffix(".bin").read_bytes() == boardmodel.binary_model(made.read_bytes())


SAME = """
import json, struct, sys
from array import array
from engine import cellmodel
out = {}
for path in json.load(open(sys.argv[1])):
    a = cellmodel.load(path)
    b = cellmodel.read(path[:-5] + ".bin", path)
    diff = []
    for key in sorted(a.__dict__):
        x = getattr(a, key)
        y = getattr(b, key)
        if isinstance(x, (array, tuple)):
            same = type(x) is type(y) and len(x) == len(y) and (
                bytes(x) == bytes(y) if isinstance(x, array) else
                all(struct.pack("<d", p) == struct.pack("<d", q) for p, q in zip(x, y)))
        elif isinstance(x, float):
            same = isinstance(y, float) and struct.pack("<d", x) == struct.pack("<d", y)
        else:
            same = x == y
        if not same:
            diff.append(key)
    out[path] = {"keys": len(a.__dict__), "differ": diff, "kinetic": b.kinetic, "n_temp": b.n_temp}
print(json.dumps(out))
"""


def _run(code: str, tmp_path: Path, arg: object, heap_kb: int) -> dict:
    """The snippet's last line as JSON; its argument goes in a file (the unix port refuses argv items of 256 bytes
    or more)."""
    path = tmp_path / "arg.json"
    path.write_text(json.dumps(arg))
    return json.loads(run_mpy(code, heap_kb=heap_kb, args=[path]).strip().splitlines()[-1])


def test_the_board_reads_the_same_model_from_either_file(tmp_path: Path) -> None:
    """Every attribute, bit for bit: float64 grids and scalars, float32 tables (the JSON path rounds the same
    numbers to float32 when it stores them)."""
    paths = [str(p.with_suffix(".json")) for p in COMPANIONS]
    r = _run(SAME, tmp_path, paths, 512)
    for path in paths:
        assert r[path]["differ"] == [], path
        assert r[path]["keys"] >= 20
    assert any(v["n_temp"] > 1 for v in r.values())  # a multi-temperature model among them


def _damaged(good: bytes) -> list[tuple[str, bytes]]:
    """Damaged variants of a companion, each with what the reader must say about it."""
    crc_at = len(good) - 4

    def resealed(data: bytes) -> bytes:  # a consistent file CRC over changed contents
        return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))

    header = list(struct.unpack(boardmodel.BINARY_HEADER, good[:HEADER]))
    bad_version = struct.pack(boardmodel.BINARY_HEADER, *header[:1], 2, *header[2:])
    bad_size = struct.pack(boardmodel.BINARY_HEADER, *header[:3], header[3] + 1, *header[4:])
    flipped = bytearray(good)
    flipped[HEADER + 200] ^= 0x40  # a SoC grid value: the CRC is checked before the grid is
    return [
        ("not a binary cell model", b"JUNK" + good[4:]),
        ("not a binary cell model", good[:10]),  # a header cut short
        ("version 2, this board reads version 1", resealed(bad_version + good[HEADER:])),
        ("bytes, expected", resealed(bad_size + good[HEADER:])),  # the header's sizes are not the file's
        ("truncated?", good[:crc_at - 100]),  # in the tables
        ("truncated?", good[:crc_at + 2]),  # in the CRC itself
        ("CRC mismatch (damaged)", bytes(flipped)),
        ("truncated?", good + b"\0"),  # data after the CRC
    ]


REFUSE = """
import json, sys
from engine import cellmodel
out = []
for path, source in json.load(open(sys.argv[1])):
    try:
        cellmodel.read(path, source)
        out.append("read")
    except ValueError as e:
        out.append(str(e))
print(json.dumps(out))
"""


def test_damaged_or_stale_companions_are_refused_naming_the_file(tmp_path: Path) -> None:
    good = (BOARD / "chen2020_spme_fit.bin").read_bytes()
    source = tmp_path / "model.json"
    source.write_bytes((BOARD / "chen2020_spme_fit.json").read_bytes())
    cases: list[tuple[str, str, str | None]] = []  # (what the reader must say, companion, source JSON)
    for i, (expect, data) in enumerate(_damaged(good)):
        damaged = tmp_path / f"damaged{i}.bin"
        damaged.write_bytes(data)
        cases.append((expect, str(damaged), None))
    intact = tmp_path / "intact.bin"
    intact.write_bytes(good)
    cases.append(("read", str(intact), str(source)))
    edited = tmp_path / "edited.json"  # the JSON changed after its companion was written
    edited.write_bytes(source.read_bytes().replace(b'"coulombic_efficiency":0.999', b'"coulombic_efficiency":0.998'))
    assert edited.read_bytes() != source.read_bytes()
    cases.append(("was made from another", str(intact), str(edited)))
    said = _run(REFUSE, tmp_path, [[path, src] for _, path, src in cases], 256)
    for (expect, path, src), got in zip(cases, said, strict=True):
        if expect == "read":
            assert got == "read"
            continue
        assert got.startswith(path) and expect in got, (expect, got)
        if src is not None:
            assert got == f"{path} was made from another {src}: write it again with python -m host.boardmodel " \
                          f"--binary {src}"

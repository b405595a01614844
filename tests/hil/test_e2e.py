"""End to end on real parts: rig (pty) -> firmware under MicroPython -> Mosquitto -> host -> database.

Every fault test ends with the same check: what the rig sent (or, when a board is killed, what
the board had persisted) is in the store exactly once."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.harness import Fleet, wait_for
from host.store import open_store
from soxcommon import wire


@pytest.fixture
def fleet_factory(tmp_path: Path) -> Iterator[type[Fleet]]:
    made: list[Fleet] = []

    def make(**kwargs: object) -> Fleet:
        fleet = Fleet(tmp_path / f"fleet{len(made)}", **kwargs)  # type: ignore[arg-type]
        made.append(fleet)
        return fleet

    yield make  # type: ignore[misc]
    for fleet in made:
        fleet.stop()


def finish(fleet: Fleet, timeout_s: float = 180) -> dict:
    fleet.wait_boards(timeout_s)
    fleet.stop()
    return fleet.score()


def test_two_boards_all_samples_stored_once(fleet_factory) -> None:
    fleet = fleet_factory(boards=2, cells=16, samples=150)
    fleet.start()
    fleet.wait_boards(180)
    # The board's goodbye may still be on its way to the host when its process has exited.
    wait_for(lambda: events(fleet)[-1:] == ["death"], 30, "the board's goodbye")
    score = finish(fleet)
    assert score["sent"] == 300
    assert (score["stored"], score["lost"], score["duplicates"], score["gaps"]) == (300, 0, 0, 0)
    assert score["quarantined"] == 0
    store = open_store(fleet.db)
    try:
        rows = list(store.samples("board-01"))
        assert len(rows) == 150 * 16
        for name, lo, hi, column in [(q[1], q[4], q[5], 7 + k) for k, q in enumerate(wire.CELL_QUANTITIES)]:
            values = [r[column] for r in rows]
            assert lo <= min(values) and max(values) <= hi, name
        # The host's time sync reached the board: later samples carry wall time, not board time.
        assert {r[4] for r in rows} == {0, 1}
        status = {s.device: s for s in store.status()}
        assert not status["board-01"].online  # the board said goodbye on its way out
        assert status["board-01"].firmware == "0.1.0"
    finally:
        store.close()


def test_host_killed_mid_stream(fleet_factory) -> None:
    fleet = fleet_factory(boards=1, cells=16, samples=1200, pace_ms=2)
    fleet.start()
    wait_for(lambda: fleet.stored() >= 200, 60, "200 stored samples")
    fleet.host.kill()
    killed_at = fleet.stored()
    fleet.host.start()
    score = finish(fleet)
    assert killed_at < 1200, "the host must die mid-stream for this test to mean anything"
    assert (score["sent"], score["stored"], score["lost"], score["duplicates"]) == (1200, 1200, 0, 0)


def test_broker_killed_twice_mid_stream(fleet_factory) -> None:
    fleet = fleet_factory(boards=2, cells=16, samples=800, pace_ms=2)
    fleet.start()
    for threshold in (300, 900):
        wait_for(lambda t=threshold: fleet.stored() >= t, 90, f"{threshold} stored samples")
        fleet.broker.restart()
    score = finish(fleet)
    assert fleet.broker.restarts == 2
    assert (score["sent"], score["stored"], score["lost"], score["duplicates"]) == (1600, 1600, 0, 0)


def test_board_killed_and_restarted(fleet_factory) -> None:
    fleet = fleet_factory(boards=1, cells=16, samples=600, pace_ms=2)
    fleet.start()
    board = fleet.board_procs[0]
    wait_for(lambda: fleet.stored() >= 150, 60, "150 stored samples")
    board.kill()
    board.start()  # same flash (data folder): a new boot, the old boot's unacknowledged records resent
    score = finish(fleet)
    summaries = board.summaries()
    assert len(summaries) == 1 and summaries[0]["boot"] == 2
    persisted = summaries[0]["queue_head"]  # every record the board ever wrote to its flash queue
    assert score["stored"] == persisted and score["duplicates"] == 0 and score["gaps"] == 0
    # At most the one sample the rig had answered when the process died never reached the flash.
    assert 0 <= score["sent"] - persisted <= 1
    store = open_store(fleet.db)
    try:
        boots = {r[0] for r in store.samples("board-01")}
    finally:
        store.close()
    assert boots == {1, 2}


def test_queue_overflow_drops_exactly_the_oldest(fleet_factory) -> None:
    """With no broker, a 40-record queue that sees 100 samples drops exactly 60, and says so."""
    fleet = fleet_factory(boards=1, cells=4, samples=100, pace_ms=1, queue_capacity=40, hold_broker=True)
    fleet.start()
    wait_for(lambda: fleet.rigs[0].counters.samples >= 100, 60, "100 samples taken offline")
    fleet.release()
    score = finish(fleet)
    assert score["dropped"] == 60
    assert score["stored"] == 40 and score["duplicates"] == 0
    summary = fleet.board_procs[0].summaries()[0]
    assert summary["dropped"] == 60
    store = open_store(fleet.db)
    try:
        seqs = sorted({r[1] for r in store.samples("board-01")})
    finally:
        store.close()
    assert seqs == list(range(60, 100))  # the oldest went, the newest stayed


def test_hung_board_is_reset_by_the_watchdog(fleet_factory) -> None:
    """A board process that stops (SIGSTOP: its loop no longer runs) stops feeding its watchdog;
    the supervisor kills and restarts it, and it comes back into the same session logic."""
    fleet = fleet_factory(boards=1, cells=8, samples=400, pace_ms=2, supervise=True,
                          board_extra={"watchdog_ms": 3000})
    fleet.start()
    board = fleet.board_procs[0]
    wait_for(lambda: fleet.stored() >= 100, 60, "100 stored samples")
    board.proc.send_signal(signal.SIGSTOP)
    wait_for(lambda: fleet.supervisors[0].watchdog_resets == 1, 30, "the watchdog reset")
    score = finish(fleet)
    summaries = board.summaries()
    assert board.starts == 2 and summaries[-1]["boot"] == 2
    assert score["stored"] == summaries[-1]["queue_head"] and score["duplicates"] == 0


def test_link_black_holed_for_30_s(fleet_factory) -> None:
    """No RST, no FIN: only keepalives find the dead link. The broker's will marks the board
    offline, the board's rebirth marks it online again, and nothing is lost."""
    fleet = fleet_factory(boards=1, cells=8, samples=900, pace_ms=5, proxy=True,
                          board_extra={"send_window": 64})
    fleet.start()
    wait_for(lambda: fleet.stored() >= 100, 60, "100 stored samples")
    fleet.net.blackhole(True)
    hole_started = time.monotonic()
    wait_for(lambda: not device_status(fleet).online, 40, "the will marking the board offline")
    time.sleep(max(0.0, 30 - (time.monotonic() - hole_started)))  # the fault lasts 30 s of wall time
    fleet.net.blackhole(False)
    wait_for(lambda: events(fleet).count("birth") == 2, 40, "the board's rebirth")
    fleet.wait_boards(180)
    wait_for(lambda: len(events(fleet)) == 4, 30, "the board's goodbye")
    score = finish(fleet)
    assert (score["sent"], score["stored"], score["lost"], score["duplicates"]) == (900, 900, 0, 0)
    # birth, the will (offline), rebirth (online), and the board's own goodbye at the end.
    assert events(fleet) == ["birth", "death", "birth", "death"]


def events(fleet: Fleet) -> list[str]:
    store = open_store(fleet.db)
    try:
        return store.device_events("board-01")
    finally:
        store.close()


def device_status(fleet: Fleet):
    store = open_store(fleet.db)
    try:
        return {s.device: s for s in store.status()}["board-01"]
    finally:
        store.close()


def test_two_hosts_share_the_fleet_and_one_dies(fleet_factory, pg_url: str) -> None:
    """Two services in one $share group on one PostgreSQL; one is SIGKILLed mid-stream."""
    fleet = fleet_factory(boards=2, cells=8, samples=600, pace_ms=2, n_hosts=2, db_url=pg_url)
    fleet.start()
    wait_for(lambda: fleet.stored() >= 300, 60, "300 stored samples")
    fleet.hosts[1].kill()
    score = finish(fleet)
    assert (score["sent"], score["stored"], score["lost"], score["duplicates"]) == (1200, 1200, 0, 0)
    log = (fleet.state_dir / "host2.log").read_text()
    assert "stored" in log or fleet.stored() == 1200

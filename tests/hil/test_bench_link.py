"""`soxbms bench link --quick`: runs end to end and writes sane figures. Loose checks only: speeds
on a loaded 2-core machine are not asserted against their bounds here (the full run reports them)."""

from __future__ import annotations

from pathlib import Path

from tests.bench import run_quick


def test_bench_link_quick(tmp_path: Path) -> None:
    r = run_quick("link", tmp_path)
    # Correctness figures hold even in the quick run.
    assert r["sent"] > 0 and r["stored"] == r["sent"]
    assert (r["lost"], r["duplicates"], r["gaps"]) == (0, 0, 0)
    assert r["broker_restarts"] >= 2 and r["recovery_s"] > 0
    # Speeds and memory: present and plausible.
    assert r["ingest_msgs_s"] > 100 and r["bare_subscriber_msgs_s"] > 100
    assert 0 < r["latency_p50_ms"] <= r["latency_p99_ms"] < 5000
    assert 10_000 < r["heap_live_peak_bytes"] < 256 * 1024
    assert r["heap_min_bytes"] is not None and r["heap_min_bytes"] % 8192 == 0
    assert {"micropython", "mosquitto", "paho_mqtt"} <= set(r["versions"])
    assert "max_inflight_messages 0" in r["broker_config"]
    assert set(r["bounds"]) >= {"lost == 0", "latency_p99_ms < 250", "heap_min <= 160 KB"}

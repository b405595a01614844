"""The storage interface, the same tests on SQLite and PostgreSQL."""

from __future__ import annotations

from host.records import BirthRecord, DataRecord, DeathRecord, Rejected
from host.store import SqlStore, open_store
from host.store.schema import MIGRATIONS

CELLS = ((3700, 250, 101325, 3900, 7000, 1550000), (3710, 251, 101300, 3901, 7001, 1550010))


def data(seq: int, boot: int = 1, low: int = 0, device: str = "dev-1") -> DataRecord:
    return DataRecord(device, boot, seq, low, 0, 100 + seq, 0, 0, -1500, CELLS, 1.0 + seq)


def test_migrations_are_idempotent(db_url: str) -> None:
    first = open_store(db_url)
    assert first.schema_version() == len(MIGRATIONS)
    first.close()
    again = open_store(db_url)
    assert again.migrate() == len(MIGRATIONS)
    again.close()


def test_duplicates_are_stored_once_and_watermark_is_contiguous(store: SqlStore) -> None:
    store.add_device("dev-1", "hash")
    result = store.write_batch([data(0), data(1), data(3)])
    assert (result.stored, result.duplicates) == (3, 0)
    assert result.acks == {("dev-1", 1): 1}  # seq 2 missing: the watermark stops before it
    assert store.gaps() == [("dev-1", 1, 2, 2)]
    result = store.write_batch([data(1), data(2)])
    assert (result.stored, result.duplicates) == (1, 1)
    assert result.acks == {("dev-1", 1): 3}
    assert store.gaps() == []
    assert store.count("sample") == 4
    assert store.count("cell_sample") == 4 * len(CELLS)


def test_watermark_starts_at_the_boards_low_sequence(store: SqlStore) -> None:
    """Records below the board's oldest queued one were dropped or committed: no wait for them."""
    store.add_device("dev-1", "hash")
    result = store.write_batch([data(10, low=10), data(11, low=10)])
    assert result.acks == {("dev-1", 1): 11}


def test_boots_are_separate_sequences(store: SqlStore) -> None:
    store.add_device("dev-1", "hash")
    result = store.write_batch([data(0, boot=1), data(0, boot=2), data(1, boot=2)])
    assert result.stored == 3
    assert result.acks == {("dev-1", 1): 0, ("dev-1", 2): 1}


def test_unknown_device_and_rejected_are_quarantined(store: SqlStore) -> None:
    store.add_device("dev-1", "hash")
    bad = Rejected("soxbms/v1/dev-1/data", b"{nope", "malformed JSON", 1.0)
    result = store.write_batch([data(0), data(0, device="intruder"), bad])
    assert (result.stored, result.quarantined) == (1, 2)
    reasons = sorted(reason for _, reason in store.quarantined())
    assert reasons == ["malformed JSON", "unknown device"]


def test_online_offline_and_late_will(store: SqlStore) -> None:
    store.add_device("dev-1", "hash")
    store.write_batch([BirthRecord("dev-1", 1, 5, 2, "0.1.0", 0, 0, 1.0)])
    assert store.status()[0].online
    # The will of session 4 arrives after the board reconnected as session 5: still online.
    store.write_batch([DeathRecord("dev-1", 4, 2.0)])
    assert store.status()[0].online
    store.write_batch([DeathRecord("dev-1", 5, 3.0)])
    assert not store.status()[0].online


def test_samples_stream_in_pages_without_splitting_a_sample(store: SqlStore) -> None:
    store.add_device("dev-1", "hash")
    store.write_batch([data(seq) for seq in range(50)])
    rows = list(store.samples("dev-1", batch=33))  # pages end mid-sample
    assert len(rows) == 50 * len(CELLS)
    assert [(r[1], r[6]) for r in rows] == [(seq, cell) for seq in range(50) for cell in range(len(CELLS))]
    window = list(store.samples("dev-1", t_from=110, t_to=120))
    assert sorted({r[1] for r in window}) == list(range(10, 20))


def test_failed_batch_rolls_back_everything(store: SqlStore) -> None:
    store.add_device("dev-1", "hash")
    broken = DataRecord("dev-1", 1, 1, 0, 0, 1, 0, 0, 0, ((1, 2),), 1.0)  # too few columns
    try:
        store.write_batch([data(0), broken])
    except Exception:  # noqa: BLE001 - either driver's error type
        pass
    else:
        raise AssertionError("a malformed record must fail the batch")
    assert store.count("sample") == 0
    assert store.write_batch([data(0)]).stored == 1


def estimated(seq: int, level: int, reasons: tuple[int, ...], soc: tuple[int | None, ...]) -> DataRecord:
    estimates = tuple((s, None if s is None else 40, None if s is None else 9900) for s in soc)
    return data(seq)._replace(estimates=estimates, sos_level=level, sos_reasons=reasons)


def test_estimates_are_stored_and_the_latest_shows_in_status(store: SqlStore) -> None:
    store.add_device("dev-1", "hash")
    store.add_device("dev-2", "hash")  # no samples: no estimate in its status
    store.write_batch([data(0), estimated(1, 2, (6, 2561), (8000, 7000)), estimated(2, 0, (), (7990, None))])
    rows = list(store.samples("dev-1", estimates=True))
    assert [r[13:] for r in rows] == [
        (None, None, None, None, None), (None, None, None, None, None),  # a sample without estimates: NULL
        (2, "6 2561", 8000, 40, 9900), (2, "6 2561", 7000, 40, 9900),
        (0, "", 7990, 40, 9900), (0, "", None, None, None)]
    status = {s.device: s for s in store.status()}
    assert (status["dev-1"].sos_level, status["dev-1"].soc_pct) == (0, 79.9)  # seq 2, its one estimated cell
    assert (status["dev-2"].sos_level, status["dev-2"].soc_pct) == (None, None)


def test_migration_2_keeps_the_rows_of_schema_1(db_url: str) -> None:
    """A database made before the estimates: migration 2 adds their columns, NULL in the old rows."""
    old = open_store(db_url, migrate=False)
    old._begin()
    old._exec("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    old._exec("INSERT INTO schema_version (version) VALUES (1)")
    d = old.dialect
    for statement in MIGRATIONS[0]:
        old._exec(statement.format(pk=d.pk, blob=d.blob, bigint=d.bigint, without_rowid=d.without_rowid))
    old.commit()
    old._exec("INSERT INTO device (device, added_at) VALUES ('dev-1', 0)")
    old._exec("INSERT INTO sample (device, boot, seq, t_s, t_ms, time_relative, current_mA, received_at,"
              " committed_at) VALUES ('dev-1', 1, 0, 5, 0, 1, -100, 1, 1)")
    old._exec("INSERT INTO cell_sample (sample_id, cell, voltage_mV) SELECT id, 0, 3700 FROM sample")
    old.commit()
    old.close()
    store = open_store(db_url)
    try:
        assert store.schema_version() == len(MIGRATIONS) == 2
        assert list(store.samples("dev-1", estimates=True)) == [
            (1, 0, 5, 0, 1, -100, 0, 3700, None, None, None, None, None, None, None, None, None, None)]
        store.write_batch([estimated(1, 1, (5,), (5000,))._replace(cells=CELLS[:1])])
        assert [r[13:] for r in store.samples("dev-1", estimates=True)][-1] == (1, "5", 5000, 40, 9900)
    finally:
        store.close()

"""Schema migrations, written once for SQLite and PostgreSQL.

Each migration is a list of statements with {pk}, {blob}, {bigint} and {without_rowid} filled in
per dialect (cell rows are clustered on their key in SQLite: one B-tree instead of two). A
migration runs in one transaction together with the bump of schema_version, so a crash never
leaves a half-migrated database."""

from __future__ import annotations

from soxcommon import wire

CELL_COLUMNS = tuple(q[1] for q in wire.CELL_QUANTITIES)
ESTIMATE_COLUMNS = tuple(q[1] for q in wire.ESTIMATE_QUANTITIES)  # cell_sample, from migration 2
SOS_COLUMNS = (wire.SOS_LEVEL[1], wire.SOS_REASONS[1])  # sample, from migration 2

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE device (
            device TEXT PRIMARY KEY,
            added_at DOUBLE PRECISION NOT NULL,
            password_hash TEXT NOT NULL DEFAULT '',
            online INTEGER NOT NULL DEFAULT 0,
            last_seen DOUBLE PRECISION,
            session INTEGER NOT NULL DEFAULT 0,
            boot INTEGER,
            firmware TEXT,
            cells INTEGER,
            queued INTEGER,
            dropped INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE sample (
            id {pk},
            device TEXT NOT NULL,
            boot INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            t_s INTEGER NOT NULL,
            t_ms INTEGER NOT NULL,
            time_relative INTEGER NOT NULL,
            current_mA INTEGER,  -- NULL: absent reading
            received_at DOUBLE PRECISION NOT NULL,
            committed_at DOUBLE PRECISION NOT NULL,
            UNIQUE (device, boot, seq)
        )""",
        "CREATE INDEX sample_time ON sample (device, t_s)",
        """CREATE TABLE cell_sample (
            sample_id {bigint} NOT NULL REFERENCES sample (id) ON DELETE CASCADE,
            cell INTEGER NOT NULL,
            """ + ",\n            ".join(f"{c} INTEGER" for c in CELL_COLUMNS) + """,  -- NULL: absent reading
            PRIMARY KEY (sample_id, cell)
        ){without_rowid}""",
        """CREATE TABLE watermark (
            device TEXT NOT NULL,
            boot INTEGER NOT NULL,
            low_seq INTEGER NOT NULL,
            committed INTEGER NOT NULL,
            PRIMARY KEY (device, boot)
        )""",
        """CREATE TABLE quarantine (
            id {pk},
            received_at DOUBLE PRECISION NOT NULL,
            topic TEXT NOT NULL,
            payload {blob} NOT NULL,
            reason TEXT NOT NULL
        )""",
        """CREATE TABLE device_event (
            id {pk},
            device TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL
        )""",
    ),
    # 2: the board's estimates (NULL: the board sent none). sos_reasons: the reason codes (wire.reason) in
    # decimal, space-separated ('' when the level is ok).
    (
        "ALTER TABLE sample ADD COLUMN sos_level INTEGER",
        "ALTER TABLE sample ADD COLUMN sos_reasons TEXT",
        "ALTER TABLE cell_sample ADD COLUMN soc_bp INTEGER",
        "ALTER TABLE cell_sample ADD COLUMN soc_sigma_bp INTEGER",
        "ALTER TABLE cell_sample ADD COLUMN soh_bp INTEGER",
    ),
)

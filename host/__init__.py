"""soxbms host: fleet ingest, storage, export and the CLI."""

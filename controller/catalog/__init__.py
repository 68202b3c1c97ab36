"""The catalog: one row per finished recording, in SQLite or PostgreSQL (issue #18)."""

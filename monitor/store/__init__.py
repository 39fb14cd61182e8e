"""The snapshot store: exact history of every observed position in SQLite or PostgreSQL."""

"""The long-running daemon and what ties it to its supervisor (systemd)."""

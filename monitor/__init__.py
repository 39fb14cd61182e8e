"""exposure-monitor: how much of a crypto portfolio third-party contracts could move right now."""

__version__ = "0.1.0"

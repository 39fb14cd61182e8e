"""What each CLI command does, apart from argument parsing (``monitor.cli``)."""

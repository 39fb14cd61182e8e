"""The benchmark suite of exposure-monitor: ``python -m benchmarks`` (see benchmarks/README.md).

Not part of the installed package: it drives the real code (``monitor.daemon.poll_cycle.Monitor``,
``exposure-monitor simulate`` and ``exposure-monitor run`` as processes) and measures it.
"""

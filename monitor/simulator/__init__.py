"""A faithful simulator of the 1inch Balance API v1.2, Spot Price API v1.1 and Web3 RPC API.

It serves a scenario (``scenario.load_scenario``) over HTTP (``server.run_simulator`` or
``server.make_app``), with knobs for what upstream leaves open and injectable faults. It is a
product feature: ``exposure-monitor simulate`` and ``demo`` use it, and so do the tests and
benchmarks. Reference: docs/simulator.md.
"""

from monitor.simulator.faults import Fault
from monitor.simulator.model import Scenario
from monitor.simulator.scenario import load_scenario, parse_scenario

__all__ = ["Fault", "Scenario", "load_scenario", "parse_scenario"]

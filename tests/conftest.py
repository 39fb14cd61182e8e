"""Shared fixtures: the real simulator on a loopback port, clients talking to it, and
databases (SQLite and PostgreSQL, see ``tests/databases.py``) for the store tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.oneinch import BalanceClient, RateLimiter, RequestRecord
from monitor.oneinch.client import RetryPolicy
from monitor.simulator.scenario import Scenario, load_scenario
from monitor.simulator.server import RunningSimulator, run_simulator
from monitor.store import migrate
from monitor.store.engine import create_engine
from tests.databases import postgres_database


@pytest.fixture(scope="session")
def default_scenario() -> Scenario:
    return load_scenario(None)


@pytest.fixture
async def simulator(default_scenario: Scenario) -> AsyncIterator[RunningSimulator]:
    async with run_simulator(default_scenario) as running:
        yield running


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def make_client(
    http_session: aiohttp.ClientSession, simulator: RunningSimulator
) -> Callable[..., BalanceClient]:
    """A client for the running simulator; keyword arguments override the fast defaults."""

    def factory(**overrides: Any) -> BalanceClient:
        options: dict[str, Any] = {
            "base_url": simulator.base_url,
            "api_key": None,
            "limiter": RateLimiter(1000),
            "timeout_s": 5.0,
            "retry": RetryPolicy(max_attempts=4, backoff_initial_s=0.01, backoff_max_s=0.05),
        }
        options.update(overrides)
        return BalanceClient(http_session, **options)

    return factory


@pytest.fixture
def request_log() -> tuple[list[RequestRecord], Callable[[RequestRecord], None]]:
    records: list[RequestRecord] = []
    return records, records.append


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each backend: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'exposure-monitor.sqlite'}"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
async def migrated_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on ``database_url``, upgraded to the newest revision."""
    engine = create_engine(database_url)
    try:
        await migrate.upgrade(engine)
        yield engine
    finally:
        await engine.dispose()

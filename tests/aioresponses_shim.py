"""aioresponses 0.7.9 against aiohttp 3.14: a test-only shim.

aiohttp 3.14 added a required ``stream_writer`` argument to ``ClientResponse``, which
aioresponses does not pass (aioresponses issue #289). This response class supplies a writer
that reports nothing written, which is all a mocked, already-sent request needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

from aiohttp import ClientResponse
from aioresponses import aioresponses


class CompatResponse(ClientResponse):
    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


@contextmanager
def mocked_http() -> Iterator[aioresponses]:
    """``aioresponses()`` whose mocked responses are built as ``CompatResponse``."""
    with patch("aioresponses.core.ClientResponse", CompatResponse), aioresponses() as mock:
        yield mock

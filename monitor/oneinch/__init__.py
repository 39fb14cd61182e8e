"""The 1inch Balance API v1.2 and Spot Price API v1.1: an async client and pure parsers."""

from monitor.errors import HostUnreachable
from monitor.oneinch.breaker import HostBreaker
from monitor.oneinch.client import BalanceClient, Reply, RequestRecord
from monitor.oneinch.parse import AggregatedToken, BalanceAllowance
from monitor.oneinch.ratelimit import RateLimiter

__all__ = [
    "AggregatedToken",
    "BalanceAllowance",
    "BalanceClient",
    "HostBreaker",
    "HostUnreachable",
    "RateLimiter",
    "Reply",
    "RequestRecord",
]

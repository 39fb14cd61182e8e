"""The exceptions exposure-monitor raises, as one small tree.

    MonitorError
    ├── ConfigError            the YAML file, a CLI argument or the environment is wrong
    ├── UpstreamError          the 1inch API or a JSON-RPC node did not give us usable data
    │   ├── RateLimited        429 after every retry
    │   ├── Unavailable        5xx, timeout or connection failure after every retry
    │   │   └── HostUnreachable  the host refused or did not resolve again and again: its
    │   │                        breaker is open, and requests to it fail at once
    │   ├── Rejected           400/401/403/404: the request itself is refused (never retried)
    │   ├── BadResponse        a 2xx answer we cannot trust (not JSON, wrong shape, bad amount)
    │   └── RpcError           a JSON-RPC node answered a call with an error object (a revert,
    │                          a refused log range, an unknown method)
    ├── StoreError             the database failed
    └── ListenError            a server cannot bind its address (in use, or not permitted)

Messages are built here and name the offending thing. They never contain the API key: the
key is held by the client alone and no error is ever given it. Nor do they contain an RPC
URL beyond ``scheme://host[:port]``: a provider's key often sits in its path or query.
"""

from __future__ import annotations

import os


class MonitorError(Exception):
    """Base of every error exposure-monitor raises on purpose."""


class ConfigError(MonitorError):
    """Invalid configuration. ``path`` is the YAML path (``chains[0].spenders[1].address``)."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


class UpstreamError(MonitorError):
    """The 1inch API failed. Carries what 1inch support needs to look the request up."""

    def __init__(
        self,
        problem: str,
        *,
        endpoint: str,
        status: int | None = None,
        request_id: str | None = None,
        attempts: int = 1,
    ) -> None:
        self.problem = problem
        self.endpoint = endpoint
        self.status = status
        self.request_id = request_id
        self.attempts = attempts
        parts = [f"{endpoint}: {problem}"]
        if status is not None:
            parts.append(f"HTTP {status}")
        if attempts > 1:
            parts.append(f"after {attempts} attempts")
        if request_id:
            parts.append(f"X-Request-Id {request_id}")
        super().__init__(" | ".join(parts))

    @property
    def reason(self) -> str:
        """A short, stable label for metrics (``rate_limited``, ``unavailable``, ...)."""
        return next((r for t, r in _REASONS.items() if isinstance(self, t)), "upstream")


class RateLimited(UpstreamError):
    """HTTP 429 on every attempt."""


class Unavailable(UpstreamError):
    """HTTP 5xx, a timeout or a connection failure on every attempt."""


class HostUnreachable(Unavailable):
    """The host refused or could not be resolved, again and again: its breaker is open.

    ``origin`` is ``scheme://host:port``: never a path, a query or credentials.
    """

    def __init__(
        self,
        origin: str,
        cause: str,
        failures: int,
        cool_down_s: float,
        *,
        endpoint: str,
        attempts: int,
    ) -> None:
        self.origin = origin
        self.cause = cause
        self.failures = failures
        super().__init__(
            f"connection failed to {origin}: {cause}, {failures} times in a row with no "
            f"answer since; requests to it fail at once for {cool_down_s:g}s",
            endpoint=endpoint,
            attempts=attempts,
        )


class Rejected(UpstreamError):
    """HTTP 400, 401, 403 or 404: retrying cannot help."""


class BadResponse(UpstreamError):
    """A successful status with a body that is not what the API documents."""


class StoreError(MonitorError):
    """The database failed. ``database`` names it: its URL with the password hidden."""

    def __init__(self, problem: str, *, database: str | None = None) -> None:
        self.problem = problem
        self.database = database
        super().__init__(f"{database}: {problem}" if database else problem)


class ListenError(MonitorError):
    """A listener cannot bind ``address``. Unlike a ``ConfigError`` this may pass by itself
    (a port still held by a process on its way out), so it is worth retrying.

    ``setting`` names where the address came from (``metrics.listen``, ``--listen``).
    """

    def __init__(self, setting: str, address: str, reason: str) -> None:
        self.setting = setting
        self.address = address
        self.reason = reason
        super().__init__(f"{setting}: cannot listen on {address}: {reason}")

    @classmethod
    def from_os_error(cls, setting: str, host: str, port: int, exc: OSError) -> ListenError:
        """The error for a failed bind of ``host:port``, with the system's reason in words."""
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        # asyncio wraps the reason in a sentence naming the address tuple: use the errno's
        # (resolver errors have negative numbers of their own, and their text is fine).
        errno = exc.errno or 0
        reason = os.strerror(errno) if errno > 0 else (exc.strerror or str(exc))
        return cls(setting, address, reason.lower())


_REASONS: dict[type[UpstreamError], str] = {
    RateLimited: "rate_limited",
    Unavailable: "unavailable",
    Rejected: "rejected",
    BadResponse: "bad_response",
}


class RpcError(UpstreamError):
    """A JSON-RPC error object ``{code, message, data}`` answering one call.

    ``rpc_message`` and ``data`` (the revert data of an ``eth_call``, when the node gives it
    as a string) are already redacted by the client: no part of the RPC URL beyond
    ``scheme://host[:port]``, no header value. ``endpoint`` is the JSON-RPC method.
    """

    def __init__(
        self,
        code: int,
        rpc_message: str,
        *,
        endpoint: str,
        origin: str,
        data: str | None = None,
        attempts: int = 1,
    ) -> None:
        self.code = code
        self.rpc_message = rpc_message
        self.data = data
        super().__init__(
            f"JSON-RPC error {code}: {rpc_message} ({origin})", endpoint=endpoint, attempts=attempts
        )

    @property
    def reason(self) -> str:
        """``rpc_error``: the node answered, with an error for this call."""
        return "rpc_error"

"""Text and JSON output of the commands, as units: names, the positions table, events."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

from monitor.config import Config, parse_config
from monitor.domain.addresses import NATIVE_TOKEN, to_checksum
from monitor.domain.model import UINT256_MAX, Position, Token
from monitor.domain.records import StoredEvent
from monitor.domain.snapshot import Change, ChangeEvent
from monitor.render import (
    HoldingRow,
    short_address,
    spender_text,
    wallet_text,
    write_events,
    write_holdings,
    write_json_lines,
    write_table,
)

OPS = "0xfcd6a6536fc62d5dcf3e1fd31f6bf54ea18ccba2"
LONE = "0x02487d261e10ae9fc6c76e86bb80b0fac04676c4"
ROUTER = "0x111111125421ca6dc452d289314280a0f8842a65"
PERMIT2 = "0x000000000022d473030f116ddee9f6b43ac78ba3"
STRANGER = "0x161b1dfb96298624a40c7d1e1948cd75045e5aba"
USDC = Token(
    chain_id=1,
    address="0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48",
    symbol="USDC",
    name="USD Coin",
    decimals=6,
)
ETH = Token(chain_id=1, address=NATIVE_TOKEN, symbol="ETH", name="Ether", decimals=18)


def config(**risk: Any) -> Config:
    return parse_config(
        {
            "wallets": [{"address": OPS, "label": "ops"}, {"address": LONE}],
            "chains": [
                {
                    "id": 1,
                    "spenders": [
                        {"address": ROUTER, "label": "1inch Router v6"},
                        {"address": PERMIT2, "label": "Uniswap Permit2"},
                        {"address": STRANGER},
                    ],
                }
            ],
            "risk": risk,
        }
    )


def position(
    token: Token, spender: str, balance: int, allowance: int, wallet: str = OPS
) -> Position:
    return Position(
        chain_id=1,
        wallet=wallet,
        spender=spender,
        token=token,
        balance=balance,
        allowance=allowance,
    )


def test_a_labelled_address_shows_its_label_and_its_shortened_checksum() -> None:
    cfg = config()
    assert short_address(OPS) == "0xfcd6…cBa2"
    assert wallet_text(cfg, OPS) == "ops (0xfcd6…cBa2)"
    assert spender_text(cfg, 1, ROUTER) == "1inch Router v6 (0x1111…2A65)"
    # Unlabelled: the whole checksummed address, what a user greps for.
    assert wallet_text(cfg, LONE) == to_checksum(LONE)
    assert spender_text(cfg, 1, STRANGER) == to_checksum(STRANGER)
    assert spender_text(cfg, 10, ROUTER) == to_checksum(ROUTER)  # not configured on chain 10


def test_the_table_prints_a_balance_once_per_wallet_and_token() -> None:
    out = io.StringIO()
    write_table(
        [
            position(USDC, ROUTER, 250_000_000_000, UINT256_MAX),
            position(USDC, PERMIT2, 250_000_000_000, 0),
            position(USDC, STRANGER, 250_000_000_000, 5_000_000_000),
            position(ETH, ROUTER, 2 * 10**18, UINT256_MAX),
            position(ETH, PERMIT2, 2 * 10**18, UINT256_MAX),
            position(USDC, ROUTER, 7_500_000, 0, wallet=LONE),
        ],
        out,
        config(),
    )
    header, *rows = out.getvalue().splitlines()
    assert header.split() == [
        "WALLET",
        "CHAIN",
        "TOKEN",
        "SPENDER",
        "BALANCE",
        "ALLOWANCE",
        "UNLIMITED",
    ]
    ops_usdc = [r for r in rows if r.startswith("ops (0xfcd6…cBa2)") and " USDC " in r]
    assert len(ops_usdc) == 3
    assert "250,000" in ops_usdc[0] and not any("250,000" in r for r in ops_usdc[1:])
    assert any(
        "1inch Router v6 (0x1111…2A65)" in r and r.endswith("unlimited  yes") for r in ops_usdc
    )
    assert any(to_checksum(STRANGER) in r and r.endswith("5,000  no") for r in ops_usdc)
    # The native coin needs no approval: one row per wallet and chain, whatever the spenders.
    native = [r for r in rows if " ETH " in r]
    assert len(native) == 1 and "n/a (native)" in native[0] and " 2 " in native[0]
    lone = [r for r in rows if r.startswith(to_checksum(LONE))]
    assert len(lone) == 1 and "7.5" in lone[0]
    # Aligned: every row has the header's width up to the right-aligned BALANCE column.
    balance_end = header.index("BALANCE") + len("BALANCE")
    assert all(r[balance_end - 1] != " " for r in rows if "250,000" in r or "7.5" in r)


def test_the_table_takes_the_unlimited_threshold_from_the_config() -> None:
    out = io.StringIO()
    write_table(
        [position(USDC, ROUTER, 0, 1_000), position(USDC, PERMIT2, 0, 999)],
        out,
        config(unlimited_threshold=1_000),
    )
    rows = out.getvalue().splitlines()[1:]
    assert [r.split()[-1] for r in rows] == ["no", "yes"]  # Permit2 (0x0000…) sorts first


def test_balance_only_rows_name_no_spender() -> None:
    out = io.StringIO()
    write_holdings(
        [
            HoldingRow(token=USDC, wallet=OPS, spender=None, balance=1_500_000, allowance=0),
            HoldingRow(token=ETH, wallet=OPS, spender=None, balance=10**18, allowance=0),
        ],
        out,
        config(),
    )
    rows = out.getvalue().splitlines()[1:]
    assert [r.split()[2:] for r in rows] == [
        ["1", "ETH", "-", "1", "n/a", "(native)", "-"],
        ["1", "USDC", "-", "1.5", "-", "-"],
    ]


def test_json_lines_keep_every_positions_balance() -> None:
    out = io.StringIO()
    positions = [
        position(USDC, ROUTER, 250_000_000_000, UINT256_MAX),
        position(USDC, PERMIT2, 250_000_000_000, 0),
    ]
    write_json_lines(positions, out, config())
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["spender"], r["balance"], r["unlimited"]) for r in rows] == [
        (PERMIT2, "250000000000", False),
        (ROUTER, "250000000000", True),
    ]
    assert rows[1]["wallet_label"] == "ops" and rows[1]["spender_label"] == "1inch Router v6"


def test_events_name_wallets_and_spenders_with_labels() -> None:
    at = datetime(2026, 11, 24, 10, 5, tzinfo=UTC)
    events = [
        StoredEvent(
            poll_id=3,
            observed_at=at,
            event=ChangeEvent(
                chain_id=1,
                wallet=OPS,
                token=USDC.address,
                spender=ROUTER,
                change=Change.GRANTED,
                old=0,
                new=UINT256_MAX,
            ),
        ),
        StoredEvent(
            poll_id=3,
            observed_at=at,
            event=ChangeEvent(
                chain_id=1,
                wallet=LONE,
                token=USDC.address,
                spender=None,
                change=Change.BALANCE_CHANGED,
                old=0,
                new=2_500_000,
            ),
        ),
    ]
    out = io.StringIO()
    write_events(events, out, {(1, USDC.address): USDC}, fmt="table", config=config())
    assert out.getvalue().splitlines() == [
        "2026-11-24T10:05:00Z  chain 1  ops (0xfcd6…cBa2)  USDC -> 1inch Router v6 (0x1111…2A65)"
        "  granted: 0 -> unlimited",
        f"2026-11-24T10:05:00Z  chain 1  {to_checksum(LONE)}  USDC balance"
        "  balance_changed: 0 -> 2.5",
    ]

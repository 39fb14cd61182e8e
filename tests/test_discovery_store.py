"""``SqlDiscoveryStore`` on SQLite and PostgreSQL: cursors and approval pairs only move
forward, a chunk commits as a whole, and no log's value is ever stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.errors import StoreError
from monitor.store.discovery import DiscoveredApproval, SqlDiscoveryStore

W1 = "0x" + "a1" * 20
W2 = "0x" + "a2" * 20
TK1 = "0x" + "c1" * 20
TK2 = "0x" + "c2" * 20
S1 = "0x" + "51" * 20
S2 = "0x" + "52" * 20
NOW = datetime(2026, 12, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Log:
    owner: str
    token: str
    spender: str
    block_number: int


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@pytest.fixture
def store(migrated_engine: AsyncEngine) -> SqlDiscoveryStore:
    return SqlDiscoveryStore(migrated_engine, clock=lambda: NOW)


async def test_a_wallet_never_scanned_starts_at_start_block(store: SqlDiscoveryStore) -> None:
    await store.save_chunk(1, cursors={W1: 500}, approvals=[], block_times={})

    assert await store.cursors(1, [W1, W2], start_block=100) == {W1: 500, W2: 100}
    assert await store.cursors(10, [W1], start_block=7) == {W1: 7}  # per chain


async def test_a_cursor_below_a_raised_start_block_starts_at_start_block(
    store: SqlDiscoveryStore,
) -> None:
    await store.save_chunk(1, cursors={W1: 500}, approvals=[], block_times={})

    assert await store.cursors(1, [W1], start_block=900) == {W1: 900}


async def test_wallets_are_matched_case_insensitively(store: SqlDiscoveryStore) -> None:
    await store.save_chunk(
        1, cursors={W1.upper().replace("0X", "0x"): 42}, approvals=[], block_times={}
    )

    assert await store.cursors(1, [W1], start_block=0) == {W1: 42}


async def test_cursors_only_move_forward(store: SqlDiscoveryStore) -> None:
    await store.save_chunk(1, cursors={W1: 500, W2: 10}, approvals=[], block_times={})
    await store.save_chunk(1, cursors={W1: 300, W2: 20}, approvals=[], block_times={})

    assert await store.cursors(1, [W1, W2], start_block=0) == {W1: 500, W2: 20}


async def test_pairs_keep_their_first_and_newest_block_with_its_time(
    store: SqlDiscoveryStore,
) -> None:
    await store.save_chunk(
        1,
        cursors={W1: 101},
        approvals=[
            Log(owner=W1, token=TK1, spender=S1, block_number=10),
            Log(owner=W1, token=TK1, spender=S1, block_number=90),
            Log(owner=W1, token=TK2, spender=S2, block_number=50),
        ],
        block_times={90: 1_700_000_090, 50: 1_700_000_050},
    )
    await store.save_chunk(
        1,
        cursors={W1: 201},
        approvals=[Log(owner=W1, token=TK1, spender=S1, block_number=150)],
        block_times={150: 1_700_000_150},
    )

    assert await store.discovered(1) == [
        DiscoveredApproval(
            chain_id=1,
            wallet=W1,
            token=TK1,
            spender=S1,
            first_block=10,
            last_block=150,
            last_approved_at=at(1_700_000_150),
        ),
        DiscoveredApproval(
            chain_id=1,
            wallet=W1,
            token=TK2,
            spender=S2,
            first_block=50,
            last_block=50,
            last_approved_at=at(1_700_000_050),
        ),
    ]
    assert await store.discovered(10) == []


async def test_an_older_chunk_saved_again_moves_nothing_back(store: SqlDiscoveryStore) -> None:
    newer = Log(owner=W1, token=TK1, spender=S1, block_number=150)
    older = Log(owner=W1, token=TK1, spender=S1, block_number=20)
    await store.save_chunk(1, cursors={W1: 151}, approvals=[newer], block_times={150: 1500})
    await store.save_chunk(1, cursors={W1: 21}, approvals=[older], block_times={20: 200})

    [pair] = await store.discovered(1)
    assert (pair.first_block, pair.last_block, pair.last_approved_at) == (20, 150, at(1500))
    assert await store.cursors(1, [W1], start_block=0) == {W1: 151}


async def test_nft_approvals_add_up_per_chain(store: SqlDiscoveryStore) -> None:
    assert await store.nft_approvals(1) == 0
    await store.save_chunk(1, cursors={W1: 10}, approvals=[], block_times={}, nft_approvals=3)
    await store.save_chunk(1, cursors={W1: 20}, approvals=[], block_times={}, nft_approvals=2)
    await store.save_chunk(10, cursors={W1: 20}, approvals=[], block_times={}, nft_approvals=1)

    assert await store.nft_approvals(1) == 5
    assert await store.nft_approvals(10) == 1


async def test_a_missing_block_time_saves_nothing(store: SqlDiscoveryStore) -> None:
    with pytest.raises(ValueError, match="no block time for block 90"):
        await store.save_chunk(
            1,
            cursors={W1: 101},
            approvals=[Log(owner=W1, token=TK1, spender=S1, block_number=90)],
            block_times={},
        )

    assert await store.cursors(1, [W1], start_block=0) == {W1: 0}


async def test_a_failed_chunk_commits_neither_pairs_nor_cursors(
    store: SqlDiscoveryStore, migrated_engine: AsyncEngine
) -> None:
    # The cursor upsert runs after the pairs': make it fail, and the pairs must not stay.
    async with migrated_engine.begin() as conn:
        await conn.execute(sa.text("DROP TABLE discovery_cursors"))

    with pytest.raises(StoreError, match="could not save a discovery chunk of chain 1"):
        await store.save_chunk(
            1,
            cursors={W1: 101},
            approvals=[Log(owner=W1, token=TK1, spender=S1, block_number=90)],
            block_times={90: 900},
        )

    assert await store.discovered(1) == []


async def test_no_column_holds_an_approved_value(migrated_engine: AsyncEngine) -> None:
    async with migrated_engine.connect() as conn:
        columns = await conn.run_sync(
            lambda c: {
                table: [col["name"] for col in sa.inspect(c).get_columns(table)]
                for table in ("discovery_cursors", "discovered_approvals", "discovery_nft_counts")
            }
        )
    assert columns["discovered_approvals"] == [
        "chain_id",
        "wallet",
        "token",
        "spender",
        "first_block",
        "last_block",
        "last_approved_at",
        "discovered_at",
    ]


async def test_block_numbers_beyond_32_bits_are_kept(store: SqlDiscoveryStore) -> None:
    big = 2**40
    await store.save_chunk(
        1,
        cursors={W1: big + 1},
        approvals=[Log(owner=W1, token=TK1, spender=S1, block_number=big)],
        block_times={big: 1},
    )

    assert await store.cursors(1, [W1], start_block=0) == {W1: big + 1}
    assert (await store.discovered(1))[0].last_block == big


async def test_spender_code_facts_survive_and_update(store: SqlDiscoveryStore) -> None:
    eoa, contract = "0x" + "ab" * 20, "0x" + "CD" * 20
    assert await store.spender_code(1) == {}
    await store.save_spender_code(1, {eoa: False, contract: True})
    await store.save_spender_code(10, {eoa: True})
    assert await store.spender_code(1) == {eoa: False, contract.lower(): True}
    # Code deployed later at the address: the newest read wins.
    await store.save_spender_code(1, {eoa: True})
    assert await store.spender_code(1) == {eoa: True, contract.lower(): True}
    assert await store.spender_code(10) == {eoa: True}


async def test_the_discovered_marker_moves_with_every_new_or_reapproved_pair(
    store: SqlDiscoveryStore,
) -> None:
    @dataclass(frozen=True)
    class Log:
        owner: str
        token: str
        spender: str
        block_number: int

    w, t, s1, s2 = ("0x" + c * 40 for c in "1234")
    assert await store.discovered_marker(1) == (0, 0)
    await store.save_chunk(1, cursors={w: 11}, approvals=[Log(w, t, s1, 10)], block_times={10: 1})
    first = await store.discovered_marker(1)
    await store.save_chunk(1, cursors={w: 21}, approvals=[Log(w, t, s2, 20)], block_times={20: 2})
    second = await store.discovered_marker(1)
    # s1 approved again at the newest block so far: no new pair, the same highest block.
    await store.save_chunk(1, cursors={w: 31}, approvals=[Log(w, t, s1, 20)], block_times={20: 2})
    third = await store.discovered_marker(1)
    assert len({first, second, third}) == 3
    # Saving an older chunk again changes nothing, so neither does the marker.
    await store.save_chunk(1, cursors={w: 11}, approvals=[Log(w, t, s1, 10)], block_times={10: 1})
    assert await store.discovered_marker(1) == third
    assert await store.discovered_marker(2) == (0, 0)

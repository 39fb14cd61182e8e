"""The poll cycle (``Monitor``) on the in-memory adapters of its ports: grants, revokes,
partial polls, suppression, value at risk and a restart, each in milliseconds."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry

from monitor.config import Config, parse_config
from monitor.config.exploits import bundled_exploits
from monitor.daemon.metrics import Instruments
from monitor.daemon.poll_cycle import Monitor
from monitor.domain.addresses import NATIVE_TOKEN
from monitor.domain.model import UINT256_MAX, Token
from monitor.domain.records import FindingChanges
from monitor.domain.snapshot import Snapshot
from monitor.errors import StoreError
from monitor.memory import ManualClock, MemoryPositions, MemoryStore, StaticPriceSource
from monitor.risk.model import Finding, RuleName

W1 = "0x" + "a1" * 20
W2 = "0x" + "b2" * 20
ROUTER = "0x" + "c3" * 20
STRANGER = "0x" + "d4" * 20
USDC = "0x" + "01" * 20
TOKENS = [
    Token(chain_id=1, address=USDC, symbol="USDC", name="USD Coin", decimals=6),
    Token(chain_id=1, address=NATIVE_TOKEN, symbol="ETH", name="Ether", decimals=18),
]
START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def config(**risk: Any) -> Config:
    return parse_config(
        {
            "api": {"base_url": "http://127.0.0.1:9", "requests_per_second": 100},
            "database": {"url": "sqlite+aiosqlite:///:memory:"},
            "wallets": [{"address": W1, "label": "treasury"}, {"address": W2}],
            "chains": [
                {
                    "id": 1,
                    "spenders": [
                        {"address": ROUTER, "label": "router", "trusted": True},
                        {"address": STRANGER},
                    ],
                }
            ],
            "risk": {"prices": {"enabled": False}, **risk},
        }
    )


class Rig:
    """A Monitor wired to memory adapters, and the adapters, for one test."""

    def __init__(self, cfg: Config, store: MemoryStore | None = None) -> None:
        self.config = cfg
        self.clock = ManualClock(START)
        self.source = MemoryPositions(
            [(1, s.address, [w.address for w in cfg.wallets]) for s in cfg.chains[0].spenders],
            TOKENS,
            clock=self.clock,
        )
        self.store = store or MemoryStore(unlimited_threshold=cfg.risk.unlimited_threshold)
        self.registry = CollectorRegistry()
        self.monitor = Monitor(
            config=cfg,
            source=self.source,
            store=self.store,
            prices=StaticPriceSource({(1, USDC): Decimal(1)}),
            exploits=bundled_exploits().merged(cfg.risk.denylist),
            instruments=Instruments(self.registry, version="test"),
            clock=self.clock,
            poll_timeout_s=10,
        )

    async def cycle(self) -> None:
        self.clock.advance(minutes=5)
        await self.monitor.poll_cycle()

    def open_rules(self) -> set[tuple[str, str, str]]:
        return {(f.rule, f.wallet, f.spender) for f in self.store.open_findings.values()}


async def test_a_grant_opens_findings_and_a_revoke_resolves_them() -> None:
    rig = Rig(config())
    rig.source.set_balance(1, W1, USDC, 5_000 * 10**6)
    await rig.cycle()
    assert rig.store.open_findings == {}
    assert rig.monitor.view.last_poll_outcome == "ok"

    rig.source.set_allowance(1, W1, USDC, STRANGER, UINT256_MAX)
    await rig.cycle()
    assert rig.open_rules() == {
        (RuleName.UNLIMITED_APPROVAL, W1, STRANGER),
        (RuleName.UNTRUSTED_SPENDER, W1, STRANGER),
        (RuleName.FRESH_APPROVAL, W1, STRANGER),
    }
    view = rig.monitor.view
    assert (1, W1, USDC, STRANGER) in view.snapshot.allowances
    assert {f.rule for f in view.findings} == {r for r, _, _ in rig.open_rules()}
    assert [e.event.change.value for e in view.recent_changes] == ["granted"]

    rig.source.set_allowance(1, W1, USDC, STRANGER, 0)
    await rig.cycle()
    assert rig.store.open_findings == {}
    assert rig.monitor.view.findings == ()
    assert (1, W1, USDC, STRANGER) not in rig.monitor.view.snapshot.allowances
    assert len(rig.store.resolved) == 3


async def test_a_failed_batch_is_not_a_revoke() -> None:
    rig = Rig(config())
    rig.source.set_allowance(1, W2, USDC, STRANGER, 1_000)
    await rig.cycle()
    assert (RuleName.UNTRUSTED_SPENDER, W2, STRANGER) in rig.open_rules()

    rig.source.fail(1, STRANGER)
    rig.source.set_allowance(1, W2, USDC, STRANGER, 0)  # unseen: the batch fails
    await rig.cycle()
    view = rig.monitor.view
    assert view.last_poll_outcome == "partial"
    assert view.upstream_up == {1: False}
    assert view.snapshot.allowances[(1, W2, USDC, STRANGER)] == 1_000
    assert (RuleName.UNTRUSTED_SPENDER, W2, STRANGER) in rig.open_rules()

    rig.source.fail(1, STRANGER, failing=False)
    await rig.cycle()
    assert (RuleName.UNTRUSTED_SPENDER, W2, STRANGER) not in rig.open_rules()
    assert rig.monitor.view.upstream_up == {1: True}


async def test_a_suppressed_finding_stays_recorded_but_marked() -> None:
    rig = Rig(
        config(ignore=[{"spender": STRANGER, "rule": "untrusted_spender", "reason": "audited"}])
    )
    rig.source.set_allowance(1, W1, USDC, STRANGER, 1_000)
    await rig.cycle()
    recorded = {f.rule: f for f in rig.store.open_findings.values()}
    assert recorded[RuleName.UNTRUSTED_SPENDER].suppressed
    assert recorded[RuleName.UNTRUSTED_SPENDER].suppression_reason == "audited"
    shown = {f.rule: f for f in rig.monitor.view.findings}
    assert shown[RuleName.UNTRUSTED_SPENDER].suppressed


async def test_value_at_risk_is_priced_by_the_price_source() -> None:
    rig = Rig(config(value_at_risk_usd=10_000))
    rig.source.set_balance(1, W1, USDC, 25_000 * 10**6)
    rig.source.set_allowance(1, W1, USDC, ROUTER, 20_000 * 10**6)
    await rig.cycle()
    (exposure,) = rig.monitor.view.exposures
    assert exposure.at_risk_usd == Decimal(20_000)
    assert (RuleName.VALUE_AT_RISK, W1, ROUTER) in rig.open_rules()


class SyncCountingStore(MemoryStore):
    """A memory store that keeps what each findings sync changed."""

    def __init__(self, *, unlimited_threshold: int) -> None:
        super().__init__(unlimited_threshold=unlimited_threshold)
        self.syncs: list[FindingChanges] = []

    async def sync_findings(self, found: Iterable[Finding], *, now: datetime) -> FindingChanges:
        changes = await super().sync_findings(found, now=now)
        self.syncs.append(changes)
        return changes


async def test_a_balance_change_rewrites_no_finding() -> None:
    cfg = config(value_at_risk_usd=10_000)
    rig = Rig(cfg, SyncCountingStore(unlimited_threshold=cfg.risk.unlimited_threshold))
    assert isinstance(rig.store, SyncCountingStore)
    rig.source.set_balance(1, W1, USDC, 25_000 * 10**6)
    rig.source.set_allowance(1, W1, USDC, STRANGER, UINT256_MAX)
    await rig.cycle()
    assert (RuleName.VALUE_AT_RISK, W1, STRANGER) in rig.open_rules()
    opened = rig.store.syncs[-1].opened
    for balance in (30_000, 12_000, 99_000):  # the value at risk moves; every finding stays
        rig.source.set_balance(1, W1, USDC, balance * 10**6)
        await rig.cycle()
        (exposure,) = rig.monitor.view.exposures
        assert exposure.at_risk_usd == Decimal(balance)
        assert rig.store.syncs[-1] == FindingChanges(opened=0, resolved=0, updated=0)
    assert len(rig.store.open_findings) == opened


async def test_a_restarted_cycle_restores_what_the_store_holds() -> None:
    first = Rig(config())
    first.source.set_allowance(1, W1, USDC, STRANGER, UINT256_MAX)
    await first.cycle()
    before = first.monitor.view

    second = Rig(config(), store=first.store)
    await second.monitor.restore()
    after = second.monitor.view
    assert after.snapshot == before.snapshot
    assert {f.key for f in after.findings} == {f.key for f in before.findings}
    assert after.last_poll_at == before.last_poll_at
    assert second.source.polls == 0  # restored, not polled


class SnapshotReadCountingStore(MemoryStore):
    """A memory store that counts the reads of its latest snapshot."""

    def __init__(self, *, unlimited_threshold: int) -> None:
        super().__init__(unlimited_threshold=unlimited_threshold)
        self.snapshot_reads = 0

    async def latest(self) -> Snapshot:
        self.snapshot_reads += 1
        return await super().latest()


async def test_a_one_shot_recording_loads_only_its_context_and_finds_what_the_daemon_finds() -> (
    None
):
    """``once`` neither reads nor evaluates the stored snapshot before it polls (the daemon's
    restore does, to serve it): its recorded findings are the daemon's all the same."""
    cfg = config(value_at_risk_usd=10_000)
    store = SnapshotReadCountingStore(unlimited_threshold=cfg.risk.unlimited_threshold)
    daemon = Rig(cfg, store)
    daemon.source.set_balance(1, W1, USDC, 25_000 * 10**6)
    await daemon.cycle()
    daemon.source.set_allowance(1, W1, USDC, STRANGER, UINT256_MAX)
    await daemon.cycle()
    found = {f.key for f in daemon.monitor.view.findings}
    assert (RuleName.VALUE_AT_RISK, 1, W1, STRANGER, None) in found

    once = Rig(cfg, store)
    once.clock.advance(minutes=10)
    once.source.set_balance(1, W1, USDC, 25_000 * 10**6)
    once.source.set_allowance(1, W1, USDC, STRANGER, UINT256_MAX)
    reads = store.snapshot_reads
    await once.monitor.load_context()
    assert store.snapshot_reads == reads  # not read, let alone evaluated
    assert once.monitor.view.findings == ()
    cycle = await once.monitor.poll_and_record()
    assert cycle.recorded.events == ()
    assert {f.key for f in cycle.report.findings} == found
    assert set(store.open_findings) == found


async def test_a_store_that_fails_keeps_the_previous_view() -> None:
    rig = Rig(config())
    rig.source.set_allowance(1, W1, USDC, STRANGER, 1_000)
    await rig.cycle()
    before = rig.monitor.view
    rig.store.fail_writes = True
    rig.source.set_allowance(1, W1, USDC, STRANGER, 0)
    await rig.cycle()  # never raises
    after = rig.monitor.view
    assert after.snapshot == before.snapshot
    assert after.findings == before.findings
    assert after.last_poll_outcome == "failed"


class BaselineUnknown(MemoryStore):
    """A store whose baseline cannot be read (the rest works)."""

    failing = False

    async def baseline_poll_id(self) -> int | None:
        if self.failing:
            raise StoreError("baseline query failed")
        return await super().baseline_poll_id()


async def test_an_unreadable_baseline_never_makes_first_observations_fresh() -> None:
    cfg = config()
    store = BaselineUnknown(unlimited_threshold=cfg.risk.unlimited_threshold)
    rig = Rig(cfg, store=store)
    rig.source.set_allowance(1, W1, USDC, ROUTER, 1_000)  # there before monitoring began
    await rig.cycle()
    assert (RuleName.FRESH_APPROVAL, W1, ROUTER) not in rig.open_rules()
    store.failing = True
    await rig.cycle()
    assert (RuleName.FRESH_APPROVAL, W1, ROUTER) not in rig.open_rules()
    assert rig.monitor.view.recent_changes == ()


async def test_a_restore_counts_as_progress_for_the_watchdog() -> None:
    rig = Rig(config())
    rig.monitor.last_progress_monotonic = 0.0  # as if built long before the restore ended
    await rig.monitor.restore()
    assert rig.monitor.last_progress_monotonic > 0.0


async def test_sources_reading_one_allowance_differently_twice_is_a_finding() -> None:
    from monitor.sources import CombinedPositions

    rig = Rig(config())
    chain = MemoryPositions([(1, STRANGER, [W1])], TOKENS, clock=rig.clock, source="chain")
    rig.monitor._source = CombinedPositions([rig.source, chain], clock=rig.clock, prefer="chain")
    rig.source.set_allowance(1, W1, USDC, STRANGER, 7_000_000)
    chain.set_allowance(1, W1, USDC, STRANGER, 5_000_000)

    def disagreeing() -> list[str]:
        return [
            f.detail
            for f in rig.monitor.view.findings
            if f.rule == RuleName.SOURCES_DISAGREE and not f.suppressed
        ]

    await rig.cycle()
    assert disagreeing() == []  # one poll apart may be one block apart
    await rig.cycle()
    assert disagreeing() == [
        "USDC allowance to 0xd4d4d4D4D4d4d4d4d4D4d4D4d4d4d4d4d4d4D4d4: "
        "1inch says 7 USDC, chain says 5 USDC, in two polls in a row"
    ]
    # The chain's live read is the value kept.
    assert rig.monitor.view.snapshot.allowance((1, W1, USDC, STRANGER)) == 5_000_000
    chain.set_allowance(1, W1, USDC, STRANGER, 7_000_000)
    await rig.cycle()
    assert disagreeing() == []
    # The chain reads a revoke that 1inch has not caught up with: the live zero wins at once.
    chain.set_allowance(1, W1, USDC, STRANGER, 0)
    await rig.cycle()
    assert (1, W1, USDC, STRANGER) not in rig.monitor.view.snapshot.allowances


async def test_the_first_observations_of_a_new_install_are_not_counted_as_changes() -> None:
    """The change counter feeds the approval-granted alert: a fresh install's baseline (every
    approval it finds) must not fire it; a grant after it does."""
    rig = Rig(config())
    rig.source.set_allowance(1, W1, USDC, STRANGER, UINT256_MAX)
    rig.source.set_balance(1, W1, USDC, 10**6)

    def granted() -> float | None:
        value = rig.registry.get_sample_value(
            "exposure_monitor_allowance_changes_total", {"change": "granted"}
        )
        # The counter's new name counts the same (the old one is deprecated).
        assert (
            rig.registry.get_sample_value("exposure_monitor_changes_total", {"change": "granted"})
            == value
        )
        return value

    await rig.cycle()
    assert granted() in (None, 0.0)
    rig.source.set_allowance(1, W2, USDC, STRANGER, 5)
    await rig.cycle()
    assert granted() == 1.0


def test_the_tokens_of_a_repeated_answer_are_not_walked_again_and_merge_in_batch_order() -> None:
    from monitor.daemon.poll_cycle import _BatchTokens
    from monitor.domain.model import BatchOutcome, PollResult, Position

    def named(symbol: str) -> Token:
        return Token(chain_id=1, address=USDC, symbol=symbol, name=symbol, decimals=6)

    def batch(spender: str, symbol: str, digest: bytes | None) -> BatchOutcome:
        position = Position(
            chain_id=1, wallet=W1, spender=spender, token=named(symbol), balance=1, allowance=1
        )
        return BatchOutcome(
            chain_id=1,
            spender=spender,
            wallets=(W1,),
            kind="aggregated",
            positions=(position,),
            answer_digest=digest,
        )

    def poll(*batches: BatchOutcome) -> PollResult:
        return PollResult(started_at=START, finished_at=START, batches=batches)

    tokens = _BatchTokens()
    # The last batch naming a token gives its metadata, as a walk over every position would.
    first = tokens.of(poll(batch(ROUTER, "A", b"1"), batch(STRANGER, "B", b"2")))
    assert first[(1, USDC)].symbol == "B"
    # The same digests: the tokens kept for them, whatever the positions (which the same
    # bytes could not have changed); the merge order holds.
    again = tokens.of(poll(batch(ROUTER, "X", b"1"), batch(STRANGER, "Y", b"2")))
    assert again[(1, USDC)].symbol == "B"
    # A new answer is walked; one without a digest always is.
    assert (
        tokens.of(poll(batch(ROUTER, "A", b"1"), batch(STRANGER, "C", b"3")))[(1, USDC)].symbol
        == "C"
    )
    assert (
        tokens.of(poll(batch(ROUTER, "A", b"1"), batch(STRANGER, "D", None)))[(1, USDC)].symbol
        == "D"
    )
    assert (
        tokens.of(poll(batch(ROUTER, "A", b"1"), batch(STRANGER, "E", None)))[(1, USDC)].symbol
        == "E"
    )


def test_the_priced_tokens_are_found_again_only_for_a_new_snapshot() -> None:
    from monitor.daemon.poll_cycle import _TokensAtRisk

    dai = "0x" + "02" * 20
    held_and_approved = Snapshot(
        allowances={(1, W1, USDC, ROUTER): 5, (1, W1, dai, ROUTER): 5},
        balances={(1, W1, USDC): 7},  # no DAI held: nothing of it at risk
    )
    at_risk = _TokensAtRisk()
    first = at_risk.of(held_and_approved)
    assert first == {1: frozenset({USDC})}
    assert at_risk.of(held_and_approved) is first  # the same snapshot: not scanned again
    moved = Snapshot(allowances=held_and_approved.allowances, balances={(1, W1, dai): 1})
    assert at_risk.of(moved) == {1: frozenset({dai})}
    assert at_risk.of(Snapshot(allowances={}, balances={(1, W1, dai): 1})) == {}

"""The eight Balance API v1.2 endpoints under ``/balance/v1.2/{chain}`` (docs/1inch-notes.md)."""

from __future__ import annotations

from aiohttp import web

from monitor.simulator.answers import (
    ApiError,
    allowance_of,
    custom_token_entries,
    parse_address,
    parse_chain,
    parse_filter_empty,
    parse_wallets_query,
    read_json_body,
    request_elapsed_s,
    respond,
    string_list,
    unique_addresses,
    wallet_key,
)
from monitor.simulator.faults import FaultTarget
from monitor.simulator.model import TokenSpec
from monitor.simulator.state import STATE

PREFIX = "/balance/v1.2/{chain}"


def add_balance_routes(app: web.Application) -> None:
    """Register the Balance API routes on ``app``."""
    app.router.add_get(f"{PREFIX}/aggregatedBalancesAndAllowances/{{spender}}", aggregated)
    app.router.add_post(f"{PREFIX}/balances/multiple/walletsAndTokens", balances_multiple)
    app.router.add_get(f"{PREFIX}/balances/{{wallet}}", balances)
    app.router.add_post(f"{PREFIX}/balances/{{wallet}}", custom_balances)
    app.router.add_get(
        f"{PREFIX}/allowancesAndBalances/{{spender}}/{{wallet}}", allowances_and_balances
    )
    app.router.add_post(
        f"{PREFIX}/allowancesAndBalances/{{spender}}/{{wallet}}",
        custom_allowances_and_balances,
    )
    app.router.add_get(f"{PREFIX}/allowances/{{spender}}/{{wallet}}", allowances)
    app.router.add_post(f"{PREFIX}/allowances/{{spender}}/{{wallet}}", custom_allowances)


# --- endpoint 1 ------------------------------------------------------------------------------


async def aggregated(request: web.Request) -> web.StreamResponse:
    """GET aggregatedBalancesAndAllowances/{spender}?wallets=a,b&filterEmpty=true"""
    state = request.app[STATE]
    behaviour = state.scenario.behaviour
    chain_id = parse_chain(request)
    spender = parse_address(request.match_info["spender"], "spender")
    wallets = parse_wallets_query(request, behaviour)
    filter_empty = parse_filter_empty(request)
    elapsed_s = request_elapsed_s(request)
    polls = {w: state.polls.next_poll(chain_id, spender, w) for w in wallets}
    keys = {w: wallet_key(state, w, spelled) for w, spelled in wallets.items()}
    answer: list[dict[str, object]] = []
    for token in state.listed.get(chain_id, ()):
        entries: dict[str, dict[str, str]] = {}
        any_held = False
        for wallet, poll in polls.items():
            balance = state.ledger.balance(chain_id, wallet, token, poll, elapsed_s)
            allowance = allowance_of(state, chain_id, wallet, token, spender, poll, elapsed_s)
            empty = balance == 0 and (token.native or allowance == 0)
            any_held = any_held or not empty
            if filter_empty and empty and behaviour.filter_empty == "wallet":
                continue
            entries[keys[wallet]] = {
                "balance": str(balance),
                "allowance": str(allowance),
            }
        if filter_empty and (not any_held or not entries):
            continue
        answer.append(_token_object(token, entries))
    target = FaultTarget(endpoint="aggregated", chain_id=chain_id, spender=spender, polls=polls)

    def served() -> None:
        for wallet, poll in polls.items():
            state.polls.served(chain_id, spender, wallet, poll)

    return await respond(request, target, answer, served)


def _token_object(token: TokenSpec, wallets: dict[str, dict[str, str]]) -> dict[str, object]:
    return {
        "address": token.address,
        "symbol": token.symbol,
        "name": token.name,
        "decimals": token.decimals,
        "logoURI": f"https://tokens.1inch.io/{token.address}.png",
        "tags": list(token.tags),
        "isCustom": False,
        "type": "ethereum" if token.native else "token",
        "tracked": True,
        "wallets": wallets,
    }


# --- endpoints 2 to 8 ------------------------------------------------------------------------


async def balances(request: web.Request) -> web.StreamResponse:
    """GET balances/{wallet}: every listed token, zero balances included."""
    state = request.app[STATE]
    chain_id = parse_chain(request)
    wallet = parse_address(request.match_info["wallet"], "walletAddress")
    poll = state.polls.current(chain_id, None, wallet)
    elapsed_s = request_elapsed_s(request)
    answer = {
        t.address: str(state.ledger.balance(chain_id, wallet, t, poll, elapsed_s))
        for t in state.listed.get(chain_id, ())
    }
    target = FaultTarget(endpoint="balances", chain_id=chain_id, polls={wallet: poll})
    return await respond(request, target, answer)


async def custom_balances(request: web.Request) -> web.StreamResponse:
    """POST balances/{wallet} {"tokens": [...]}"""
    state = request.app[STATE]
    chain_id = parse_chain(request)
    wallet = parse_address(request.match_info["wallet"], "walletAddress")
    asked = string_list(await read_json_body(request), "tokens")
    poll = state.polls.current(chain_id, None, wallet)
    elapsed_s = request_elapsed_s(request)
    answer = {
        address: str(state.ledger.balance(chain_id, wallet, t, poll, elapsed_s) if t else 0)
        for address, t in custom_token_entries(state, chain_id, asked)
    }
    target = FaultTarget(endpoint="custom_balances", chain_id=chain_id, polls={wallet: poll})
    return await respond(request, target, answer)


async def balances_multiple(request: web.Request) -> web.StreamResponse:
    """POST balances/multiple/walletsAndTokens {"tokens": [...], "wallets": [...]}"""
    state = request.app[STATE]
    chain_id = parse_chain(request)
    body = await read_json_body(request)
    asked_tokens, asked_wallets = string_list(body, "tokens"), string_list(body, "wallets")
    limit = state.scenario.behaviour.max_wallets_per_request
    if limit is not None and len(asked_wallets) > limit:
        raise ApiError(f"too many wallets: {len(asked_wallets)}, at most {limit} per request")
    wallets = unique_addresses(asked_wallets, "wallet")
    tokens = custom_token_entries(state, chain_id, asked_tokens)
    elapsed_s = request_elapsed_s(request)
    polls = {w: state.polls.current(chain_id, None, w) for w in wallets}
    answer = {
        wallet_key(state, wallet, spelled): {
            address: str(
                state.ledger.balance(chain_id, wallet, t, polls[wallet], elapsed_s) if t else 0
            )
            for address, t in tokens
        }
        for wallet, spelled in wallets.items()
    }
    target = FaultTarget(endpoint="balances_multiple", chain_id=chain_id, polls=polls)
    return await respond(request, target, answer)


def _spender_and_wallet(request: web.Request) -> tuple[str, str]:
    return (
        parse_address(request.match_info["spender"], "spender"),
        parse_address(request.match_info["wallet"], "walletAddress"),
    )


async def allowances_and_balances(request: web.Request) -> web.StreamResponse:
    """GET allowancesAndBalances/{spender}/{wallet}: every listed token."""
    return await _allowances_answer(request, "allowances_and_balances", False, with_balance=True)


async def custom_allowances_and_balances(request: web.Request) -> web.StreamResponse:
    """POST allowancesAndBalances/{spender}/{wallet} {"tokens": [...]}"""
    return await _allowances_answer(
        request, "custom_allowances_and_balances", True, with_balance=True
    )


async def allowances(request: web.Request) -> web.StreamResponse:
    """GET allowances/{spender}/{wallet}: every listed token."""
    return await _allowances_answer(request, "allowances", False, with_balance=False)


async def custom_allowances(request: web.Request) -> web.StreamResponse:
    """POST allowances/{spender}/{wallet} {"tokens": [...]}"""
    return await _allowances_answer(request, "custom_allowances", True, with_balance=False)


async def _allowances_answer(
    request: web.Request, endpoint: str, custom: bool, *, with_balance: bool
) -> web.StreamResponse:
    state = request.app[STATE]
    chain_id = parse_chain(request)
    spender, wallet = _spender_and_wallet(request)
    tokens: list[tuple[str, TokenSpec | None]]
    if custom:
        asked = string_list(await read_json_body(request), "tokens")
        tokens = custom_token_entries(state, chain_id, asked)
    else:
        tokens = [(t.address, t) for t in state.listed.get(chain_id, ())]
    poll = state.polls.current(chain_id, spender, wallet)
    elapsed_s = request_elapsed_s(request)
    answer: dict[str, object] = {}
    for address, token in tokens:
        allowance = (
            allowance_of(state, chain_id, wallet, token, spender, poll, elapsed_s) if token else 0
        )
        if not with_balance:
            answer[address] = str(allowance)
            continue
        balance = state.ledger.balance(chain_id, wallet, token, poll, elapsed_s) if token else 0
        answer[address] = {"balance": str(balance), "allowance": str(allowance)}
    target = FaultTarget(
        endpoint=endpoint, chain_id=chain_id, spender=spender, polls={wallet: poll}
    )
    return await respond(request, target, answer)

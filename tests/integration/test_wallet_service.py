"""The wallet service on real Kafka and PostgreSQL: REST, worker, projector together."""

from __future__ import annotations

import asyncio
import signal
import uuid
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from connectors.config import Config
from connectors.topics import PAYMENT_DLQ, WALLET_MOVEMENT_REQUIRED, WALLET_MOVEMENT_UPDATES
from devtools.devctl import Supervisor
from domain import wallet as domain
from domain.money import Money
from streams.envelope import command_record, new_meta
from tests.conftest import ensure_running
from tests.integration.kafka_helpers import codec, events_for_key, publish, raw_messages, tailing
from tests.support import JSON, Api, eventually
from tests.support.actors import TEST_OPERATOR
from tests.support.kafka import writer
from tests.support.postgres import inspect_as_owner


@pytest.fixture
async def db(config: Config):
    conn = await inspect_as_owner(config)
    yield conn
    await conn.close()


async def open_wallet(api: Api, balance: int, currency: str = "USD") -> str:
    status, body = await api.post("/api/v1/wallets", {"user_id": str(uuid.uuid4()), "currency": currency})
    assert status == 201, body
    if balance:
        status, body2 = await api.post(
            f"/api/v1/wallet/{body['id']}/movement", {"type": "income", "amount": balance, "currency": currency}
        )
        assert status == 201, body2
    return str(body["id"])


async def projected_balance(
    db: asyncpg.Connection, wallet_id: str, expected: int, timeout: float = 30.0, version: int | None = None
) -> int:
    seen: list[int | None] = []

    async def check() -> int | None:
        # Balances and movements come from two topics; wait until both views agree.
        value = await db.fetchval(
            "SELECT balance FROM wallets WHERE id = $1 AND ($2::bigint IS NULL OR version = $2) AND balance = "
            "(SELECT COALESCE(sum(CASE type WHEN 'income' THEN amount ELSE -amount END), 0) FROM wallet_movements "
            "WHERE wallet_id = $1 AND status = 'applied')",
            wallet_id,
            version,
        )
        seen.append(value)
        return value if value == expected else None

    try:
        await eventually(check, timeout=timeout, what=f"wallet {wallet_id} projected with balance {expected}")
    except AssertionError as error:
        raise AssertionError(f"{error}; projected balances seen: {sorted(set(seen), key=str)}") from None
    return expected


def movement_command(
    wallet_id: str, kind: str, amount: int, movement_id: str | None = None, event_id: str | None = None
) -> dict[str, Any]:
    return command_record(
        "MovementRequired",
        new_meta(event_id=event_id, actor=TEST_OPERATOR),
        movement_id=movement_id or str(uuid.uuid4()),
        wallet_id=wallet_id,
        type=kind,
        amount={"amount": amount, "currency": "USD"},
        reference=None,
        description=None,
        reverts_movement_id=None,
        payment_id=None,
    )


async def test_the_seed_wallet_is_readable_with_its_opening_balance(wallet_api: Api) -> None:
    async def seeded() -> Any:
        status, body = await wallet_api.get("/api/v1/wallet/550e8400-e29b-41d4-a716-446655440003")
        return body if status == 200 else None

    body = await eventually(seeded, what="sample wallet 3 projected")
    assert (body["currency"], body["user_id"]) == ("EUR", "550e8400-e29b-41d4-a716-446655440012")
    assert body["balance"] >= 0 and isinstance(body["balance"], int)


async def test_income_expense_and_revert_with_their_rows(wallet_api: Api, db: asyncpg.Connection) -> None:
    wallet_id = await open_wallet(wallet_api, 0)
    status, income = await wallet_api.post(
        f"/api/v1/wallet/{wallet_id}/movement",
        {
            "type": "income",
            "amount": 10_000,
            "currency": "USD",
            "reference": "Manual income",
            "description": "Test income",
        },
    )
    assert status == 201 and income["status"] == "applied" and income["amount"] == 10_000
    status, expense = await wallet_api.post(
        f"/api/v1/wallet/{wallet_id}/movement", {"type": "expense", "amount": 2_500, "currency": "USD"}
    )
    assert status == 201 and expense["balance_after"] == 7_500
    status, revert = await wallet_api.post(
        f"/api/v1/movement/{expense['id']}/revert", {"reason": "Correction needed", "requested_by": "admin"}
    )
    assert status == 201, revert
    assert (revert["type"], revert["amount"], revert["reverts_movement_id"]) == ("income", 2_500, expense["id"])
    await projected_balance(db, wallet_id, 10_000)

    async def three_rows() -> list[Any] | None:
        # Balances and movements are separate topics: one can be projected before the other.
        rows = await db.fetch(
            "SELECT id::text, type, amount, reverts_movement_id::text FROM wallet_movements "
            "WHERE wallet_id = $1 ORDER BY seq",
            wallet_id,
        )
        return rows if len(rows) == 3 else None

    rows = await eventually(three_rows, what="three movement rows")
    assert [(r["type"], r["amount"], r["reverts_movement_id"]) for r in rows] == [
        ("income", 10_000, None),
        ("expense", 2_500, None),
        ("income", 2_500, expense["id"]),
    ]
    status, again = await wallet_api.post(
        f"/api/v1/movement/{expense['id']}/revert", {"reason": "twice", "requested_by": "admin"}
    )
    assert status == 409 and again["error"]["code"] == "already_reverted"


async def test_history_is_newest_first_with_a_cursor(wallet_api: Api, db: asyncpg.Connection) -> None:
    wallet_id = await open_wallet(wallet_api, 0)
    ids = []
    for amount in (100, 200, 300):
        _, body = await wallet_api.post(
            f"/api/v1/wallet/{wallet_id}/movement", {"type": "income", "amount": amount, "currency": "USD"}
        )
        ids.append(body["id"])
    await projected_balance(db, wallet_id, 600)
    status, page = await wallet_api.get(f"/api/v1/wallet/{wallet_id}/movements?limit=2")
    assert status == 200 and [m["id"] for m in page["data"]] == [ids[2], ids[1]] and page["has_more"]
    _, rest = await wallet_api.get(f"/api/v1/wallet/{wallet_id}/movements?limit=2&starting_after={ids[1]}")
    assert [m["id"] for m in rest["data"]] == [ids[0]] and not rest["has_more"]


async def test_insufficient_funds_currency_mismatch_and_unknown_wallet(wallet_api: Api) -> None:
    wallet_id = await open_wallet(wallet_api, 1_000)
    path = f"/api/v1/wallet/{wallet_id}/movement"
    status, body = await wallet_api.post(path, {"type": "expense", "amount": 1_001, "currency": "USD"})
    assert (status, body["error"]["code"]) == (422, "insufficient_funds")
    status, body = await wallet_api.post(path, {"type": "income", "amount": 5, "currency": "EUR"})
    assert (status, body["error"]["code"]) == (422, "currency_mismatch")
    status, body = await wallet_api.post(
        f"/api/v1/wallet/{uuid.uuid4()}/movement", {"type": "income", "amount": 5, "currency": "USD"}
    )
    assert (status, body["error"]["code"]) == (404, "wallet_not_found")
    status, body = await wallet_api.get(f"/api/v1/wallet/{uuid.uuid4()}")
    assert status == 404


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"type": "income", "amount": 1.5, "currency": "USD"}, 422, "amount"),
        ({"type": "income", "amount": "100", "currency": "USD"}, 422, "amount"),
        ({"type": "income", "amount": 0, "currency": "USD"}, 422, "amount"),
        ({"type": "income", "amount": -3, "currency": "USD"}, 422, "amount"),
        ({"type": "income", "amount": 100, "currency": "DOLLARS"}, 422, "currency"),
        ({"type": "gift", "amount": 100, "currency": "USD"}, 422, "type"),
        ({"amount": 100, "currency": "USD"}, 400, "type"),
        ({"type": "income", "amount": 100, "currency": "USD", "admin": True}, 400, "admin"),
    ],
)
async def test_bad_input_is_refused_naming_the_field_and_publishes_nothing(
    wallet_api: Api, config: Config, body: dict[str, Any], status: int, field: str
) -> None:
    wallet_id = "550e8400-e29b-41d4-a716-446655440002"
    before = len(await events_for_key(config, WALLET_MOVEMENT_REQUIRED.name, wallet_id))
    got, error = await wallet_api.post(f"/api/v1/wallet/{wallet_id}/movement", body)
    assert (got, error["error"]["field"]) == (status, field)
    assert len(await events_for_key(config, WALLET_MOVEMENT_REQUIRED.name, wallet_id)) == before


async def test_malformed_json_and_non_uuid_ids_are_refused(wallet_api: Api) -> None:
    status, body = await wallet_api.request(
        "POST",
        "/api/v1/wallet/550e8400-e29b-41d4-a716-446655440002/movement",
        data=b"{not json",
        headers=JSON,
    )
    assert (status, body["error"]["code"]) == (400, "malformed_json")
    status, body = await wallet_api.post(
        "/api/v1/wallet/not-a-uuid/movement", {"type": "income", "amount": 1, "currency": "USD"}
    )
    assert (status, body["error"]["field"]) == (422, "wallet_id")


async def test_an_idempotency_key_returns_the_first_result(wallet_api: Api, db: asyncpg.Connection) -> None:
    wallet_id = await open_wallet(wallet_api, 5_000)
    headers = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    body = {"type": "expense", "amount": 1_000, "currency": "USD"}
    first = await wallet_api.post(f"/api/v1/wallet/{wallet_id}/movement", body, headers=headers)
    second = await wallet_api.post(f"/api/v1/wallet/{wallet_id}/movement", body, headers=headers)
    assert first[0] == second[0] == 201 and first[1] == second[1]
    conflict = await wallet_api.post(f"/api/v1/wallet/{wallet_id}/movement", {**body, "amount": 999}, headers=headers)
    assert conflict[0] == 409
    await projected_balance(db, wallet_id, 4_000)


async def test_fifty_concurrent_expenses_apply_exactly_sixteen(
    wallet_api: Api, config: Config, db: asyncpg.Connection
) -> None:
    wallet_id = await open_wallet(wallet_api, 50_000)
    results = await asyncio.gather(
        *(
            wallet_api.post(
                f"/api/v1/wallet/{wallet_id}/movement", {"type": "expense", "amount": 3_000, "currency": "USD"}
            )
            for _ in range(50)
        )
    )
    statuses = sorted(status for status, _ in results)
    assert statuses.count(201) == 16 and statuses.count(422) == 34
    assert all(body["error"]["code"] == "insufficient_funds" for status, body in results if status == 422)
    await projected_balance(db, wallet_id, 2_000)
    outcomes = [
        e
        for e in await events_for_key(config, WALLET_MOVEMENT_UPDATES.name, wallet_id)
        if e["envelope"]["event_type"] == "MovementUpdated"
    ]
    assert min(e["balance_after"] for e in outcomes) >= 0
    assert sum(e["status"] == "applied" for e in outcomes) == 1 + 16  # the opening income + 16


async def test_a_command_delivered_twice_applies_once_and_re_emits_the_same_event(
    wallet_api: Api, config: Config, db: asyncpg.Connection
) -> None:
    wallet_id = await open_wallet(wallet_api, 10_000)
    command = movement_command(wallet_id, "expense", 4_000)
    await publish(config, WALLET_MOVEMENT_REQUIRED.name, wallet_id, command, command)

    async def both_outcomes() -> list[dict[str, Any]] | None:
        events = [
            e
            for e in await events_for_key(config, WALLET_MOVEMENT_UPDATES.name, wallet_id)
            if e.get("movement_id") == command["movement_id"]
        ]
        return events if len(events) == 2 else None

    first, second = await eventually(both_outcomes, what="two outcome events")
    assert first == second  # same event id, same content
    await projected_balance(db, wallet_id, 6_000)
    assert await db.fetchval("SELECT count(*) FROM wallet_movements WHERE id = $1", command["movement_id"]) == 1


async def test_a_poison_message_is_dead_lettered_and_the_partition_moves_on(
    wallet_api: Api, config: Config, db: asyncpg.Connection
) -> None:
    wallet_id = await open_wallet(wallet_api, 1_000)
    poison = b"\xc3\x01" + uuid.uuid4().bytes[:8] + b"no such schema"
    producer = AIOKafkaProducer(**writer(config, WALLET_MOVEMENT_REQUIRED.name).aiokafka())
    await producer.start()
    try:
        await producer.send_and_wait(WALLET_MOVEMENT_REQUIRED.name, poison, key=wallet_id.encode())
    finally:
        await producer.stop()
    await publish(config, WALLET_MOVEMENT_REQUIRED.name, wallet_id, movement_command(wallet_id, "income", 500))
    await projected_balance(db, wallet_id, 1_500)  # the message after the poison was processed

    async def dead_letter() -> dict[str, Any] | None:
        for _, value in await raw_messages(config, PAYMENT_DLQ.name):
            letter = codec.decode(value)
            if letter["value"] == poison:
                return letter
        return None

    letter = await eventually(dead_letter, what="the poison message in payment.dlq")
    assert letter["source_topic"] == WALLET_MOVEMENT_REQUIRED.name and letter["key"] == wallet_id.encode()
    assert letter["error_type"] == "EventDecodeError" and "fingerprint" in letter["error_message"]


async def test_a_worker_killed_mid_stream_ends_with_the_balances_of_an_uninterrupted_run(
    wallet_api: Api, config: Config, supervisor: Supervisor, db: asyncpg.Connection
) -> None:
    wallets = [await open_wallet(wallet_api, 20_000) for _ in range(3)]
    commands = [
        movement_command(wallets[i % 3], "expense" if i % 4 else "income", 700 + (i % 5) * 300) for i in range(600)
    ]
    async with tailing(config, WALLET_MOVEMENT_UPDATES.name) as outcomes:
        producing = asyncio.gather(
            *(
                publish(config, WALLET_MOVEMENT_REQUIRED.name, w, *[c for c in commands if c["wallet_id"] == w])
                for w in wallets
            )
        )

        async def some_decided() -> bool:
            return sum(o.get("wallet_id") in wallets for o in outcomes) >= 50

        # Killed by progress, mid-stream: 50 outcomes out, most of the 600 commands still to come.
        await eventually(some_decided, what="the worker deciding 50 movements")
        supervisor.stop("wallet-worker", signal.SIGKILL)
        assert sum(o.get("wallet_id") in wallets for o in outcomes) < len(commands)
        await producing
    ensure_running(config, supervisor, "wallet-worker")

    expected, applied = replay_uninterrupted(wallets, commands)
    for wallet_id in wallets:
        # The version pins the state: an intermediate balance can equal the final one.
        balance, version = expected[wallet_id]
        await projected_balance(db, wallet_id, balance, timeout=60, version=version)
    count = await db.fetchval(
        "SELECT count(*) FROM wallet_movements WHERE wallet_id = ANY($1::uuid[]) AND status = 'applied'", wallets
    )
    assert count == len(wallets) + applied  # each opening income + the stream's applied movements


def replay_uninterrupted(wallets: list[str], commands: list[dict[str, Any]]) -> tuple[dict[str, tuple[int, int]], int]:
    """The same commands through the pure domain, in order, with nothing killed."""
    state = {w: domain.Wallet(w, "u", "USD", 20_000, 1) for w in wallets}
    records: dict[str, domain.MovementRecord] = {}
    for c in commands:
        command = domain.RequireMovement(
            "e",
            c["movement_id"],
            c["wallet_id"],
            c["type"],
            Money(c["amount"]["amount"], "USD"),
            "corr",
            actor=TEST_OPERATOR,
        )
        decision = domain.decide_movement(state[c["wallet_id"]], records.get, command, 0)
        records.update((r.movement_id, r) for r in decision.records)
        if decision.wallet:
            state[c["wallet_id"]] = decision.wallet
    return {w: (s.balance, s.version) for w, s in state.items()}, sum(r.status == "applied" for r in records.values())


async def test_dropping_the_views_and_replaying_the_log_rebuilds_them_identically(
    wallet_api: Api, config: Config, supervisor: Supervisor, db: asyncpg.Connection
) -> None:
    wallet_id = await open_wallet(wallet_api, 3_000)
    await projected_balance(db, wallet_id, 3_000)
    snapshot_sql = (
        "SELECT (SELECT json_agg(w ORDER BY id) FROM wallets w)::text, "
        "(SELECT json_agg(m ORDER BY id) FROM (SELECT id, wallet_id, type, amount, currency, status, "
        "reason_code, balance_after, wallet_version, reverts_movement_id, created_at, event_id "
        "FROM wallet_movements) m)::text"
    )
    before = await db.fetchrow(snapshot_sql)
    supervisor.stop("projector")
    await db.execute(
        "TRUNCATE wallets, wallet_movements; DELETE FROM projection_offsets WHERE projection = 'wallet_views'"
    )
    ensure_running(config, supervisor, "projector")

    async def rebuilt() -> Any:
        after = await db.fetchrow(snapshot_sql)
        return after if tuple(after) == tuple(before) else None

    await eventually(rebuilt, timeout=60, what="views rebuilt from the log equal to the originals")

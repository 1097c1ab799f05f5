"""Who may read and write what on Kafka: one grant per principal, the only source of the
broker's ACLs. Setup applies it as admin (`apply_acls`: missing ACLs created, ACLs of our
principals that the table no longer gives removed), docs/security.md shows it
(`python -m connectors.kafka_acl` prints the table; a unit test compares), and unit tests
check it against the topics each process really reads and writes.

The broker denies whatever no ACL allows (`allow.everyone.if.no.acl.found=false`); `admin` is
its only super user. READ and WRITE on a topic include DESCRIBE (metadata, offsets), and WRITE
on a topic is enough for an idempotent producer (KIP-679), so no cluster ACL is needed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from connectors import topics as t
from connectors.credentials import (
    ADMIN,
    AUDITOR,
    CONSOLE,
    HEALTH,
    OPERATOR,
    PAYMENT_API,
    PAYMENT_WORKER,
    PRINCIPALS,
    PROJECTOR,
    WALLET_API,
    WALLET_WORKER,
)


@dataclass(frozen=True)
class Grant:
    principal: str
    reads: tuple[str, ...] = ()  # topics
    writes: tuple[str, ...] = ()  # topics
    groups: tuple[str, ...] = ()  # consumer groups, by exact name
    group_prefixes: tuple[str, ...] = ()  # consumer groups, every name starting so
    watches: tuple[str, ...] = ()  # groups whose members and committed offsets it may see (DESCRIBE)
    watch_prefixes: tuple[str, ...] = ()
    sees: tuple[str, ...] = ()  # topics whose partitions and offsets, not contents, it may see (DESCRIBE)
    configs: tuple[str, ...] = ()  # topics whose configuration (retention...) it may see (DESCRIBE_CONFIGS)
    why: str = ""


def names(*specs: t.TopicSpec) -> tuple[str, ...]:
    return tuple(spec.name for spec in specs)


# The topics a worker consumes: only these can hold a dead letter's source (the projector's
# letters are re-applied to PostgreSQL, not re-published).
WORKER_SOURCES = names(
    t.WALLET_MOVEMENT_REQUIRED,
    t.PAYMENT_CREATED,
    t.WALLET_PAYMENT_OPERATIONS,
    t.EXTERNAL_PROVIDER_EVENTS,
    t.PAYMENT_OPERATION_COMPLETED,
    t.PAYMENT_OPERATION_INCONSISTENT,
    t.PAYMENT_REFUND_REQUESTED,
)
# Commands and raw provider input are not the books, the dead letters are counted apart.
AUDITED = tuple(
    s.name for s in t.ALL_TOPICS if s not in (t.WALLET_MOVEMENT_REQUIRED, t.EXTERNAL_PROVIDER_EVENTS, t.PAYMENT_DLQ)
)
PROJECTOR_GROUP_PREFIX = "projector-"
CONSOLE_GROUP_PREFIX = "console-"

GRANTS: tuple[Grant, ...] = (
    Grant(
        WALLET_WORKER,
        reads=names(t.WALLET_MOVEMENT_REQUIRED, t.WALLETS_CHANGELOG, t.MOVEMENTS_CHANGELOG),
        writes=names(
            t.WALLET_MOVEMENT_UPDATES,
            t.WALLET_BALANCE_UPDATE,
            t.WALLET_PAYMENT_OPERATIONS,
            t.PAYMENT_DLQ,
            t.WALLETS_CHANGELOG,
            t.MOVEMENTS_CHANGELOG,
        ),
        groups=(t.WALLET_WORKER,),
        why="the wallets' single writer: wallet commands in; outcomes (by wallet, and to the payment by"
        " payment), balances out; its tables",
    ),
    Grant(
        PAYMENT_WORKER,
        reads=names(
            t.PAYMENT_CREATED,
            t.WALLET_PAYMENT_OPERATIONS,
            t.EXTERNAL_PROVIDER_EVENTS,
            t.PAYMENT_OPERATION_COMPLETED,
            t.PAYMENT_OPERATION_INCONSISTENT,
            t.PAYMENT_REFUND_REQUESTED,
            t.PAYMENTS_CHANGELOG,
            t.OPEN_PAYMENTS_CHANGELOG,
        ),
        writes=names(
            t.PAYMENT_SUCCEEDED,
            t.PAYMENT_FAILED,
            t.PAYMENT_REFUNDED,
            t.PAYMENT_REFUND_FAILED,
            t.PAYMENT_OPERATION_COMPLETED,
            t.PAYMENT_OPERATION_INCONSISTENT,
            t.WALLET_MOVEMENT_REQUIRED,
            t.PAYMENT_DLQ,
            t.PAYMENTS_CHANGELOG,
            t.OPEN_PAYMENTS_CHANGELOG,
        ),
        groups=(t.PAYMENT_WORKER,),
        why="the payment saga: debits and credits wallets only through wallet commands",
    ),
    Grant(
        PROJECTOR,
        reads=names(
            t.WALLET_MOVEMENT_UPDATES,
            t.WALLET_BALANCE_UPDATE,
            t.PAYMENT_CREATED,
            t.PAYMENT_SUCCEEDED,
            t.PAYMENT_FAILED,
            t.PAYMENT_REFUNDED,
            t.PAYMENT_OPERATION_COMPLETED,
            t.WALLET_PAYMENT_OPERATIONS,
            t.PAYMENT_OPERATION_INCONSISTENT,
            t.PAYMENT_REFUND_REQUESTED,
            t.PAYMENT_REFUND_FAILED,
        ),
        writes=names(t.PAYMENT_DLQ),
        group_prefixes=(PROJECTOR_GROUP_PREFIX,),
        why="one group per projection (`projector-<projection>`); dead-letters what it cannot project",
    ),
    Grant(AUDITOR, reads=AUDITED, why="reads the books without a group; writes nothing"),
    Grant(
        WALLET_API,
        reads=names(t.WALLET_MOVEMENT_UPDATES),
        writes=names(t.WALLET_MOVEMENT_REQUIRED),
        why="wallet commands; waits for their outcomes without a group",
    ),
    Grant(
        PAYMENT_API,
        reads=names(t.PAYMENT_SUCCEEDED, t.PAYMENT_FAILED),
        writes=names(t.PAYMENT_CREATED, t.PAYMENT_REFUND_REQUESTED, t.EXTERNAL_PROVIDER_EVENTS),
        why="payments, refunds and the providers' signed webhooks; waits for outcomes without a group",
    ),
    Grant(
        CONSOLE,
        reads=names(*t.ALL_TOPICS),
        group_prefixes=(CONSOLE_GROUP_PREFIX,),
        watches=(t.WALLET_WORKER, t.PAYMENT_WORKER),
        watch_prefixes=(PROJECTOR_GROUP_PREFIX,),
        sees=names(*t.CHANGELOG_TOPICS),  # a worker group's lag includes its tables' changelogs
        configs=names(*t.DECLARED_TOPICS),
        why="`payments` and `bin/kafka-tool`: reads the event store (not the tables' changelogs) and sees"
        " how far each group is; writes nothing",
    ),
    Grant(
        OPERATOR,
        writes=WORKER_SOURCES,
        why="`payments dlq replay`: a dead letter back on the worker topic it came from",
    ),
    Grant(
        HEALTH,
        watches=(t.WALLET_WORKER, t.PAYMENT_WORKER),
        watch_prefixes=(PROJECTOR_GROUP_PREFIX,),
        sees=names(*t.DECLARED_TOPICS),
        why="`payments health` and the gateway's `/api/v1/system/health`: groups, offsets and newest"
        " timestamps (lag, dead letters, last completion); reads no event and writes nothing",
    ),
)
GRANT_OF = {grant.principal: grant for grant in GRANTS}
assert set(GRANT_OF) == set(PRINCIPALS) - {ADMIN}, "every principal but the super user has its grant"


def user(principal: str) -> str:
    return f"User:{principal}"


def markdown_table() -> str:
    """The grants as docs/security.md shows them."""
    rows = [
        "| principal | reads (topics) | writes (topics) | consumer groups | sees (offsets, configs) | why |",
        "|---|---|---|---|---|---|",
        f"| `{ADMIN}` | all (super user) | all | any | all | setup only: topics, users, ACLs, sample wallets |",
    ]

    def cell(items: tuple[str, ...]) -> str:
        return ", ".join(f"`{item}`" for item in items) or "nothing"

    for g in GRANTS:
        groups = cell(g.groups + tuple(f"{prefix}*" for prefix in g.group_prefixes))
        if not (g.groups or g.group_prefixes):
            groups = "none (assigns partitions)" if g.reads else "none"
        watched = cell(g.watches + tuple(f"{prefix}*" for prefix in g.watch_prefixes) + g.sees)
        if g.configs:
            watched += f"; the configuration of {len(g.configs)} topics"
        rows.append(f"| `{g.principal}` | {cell(g.reads)} | {cell(g.writes)} | {groups} | {watched} | {g.why} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())

"""Kafka administration, as the admin principal: create the declared topics (and check they
match the declaration), give every principal its SCRAM password, apply the ACL table."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from connectors.config import Config, KafkaConfig
from connectors.credentials import ADMIN, PRINCIPALS, kafka_login
from connectors.kafka_acl import GRANTS, Grant, user
from connectors.kafka_security import KafkaAccess
from connectors.topics import DECLARED_TOPICS, TopicSpec

SCRAM_ITERATIONS = 8192  # Kafka's minimum is 4096; the login costs this many hashes once per connection


class TopicMismatch(RuntimeError):
    """An existing topic differs from its declaration (partitions cannot shrink)."""


def admin_client(access: KafkaAccess) -> AdminClient:
    return AdminClient(access.confluent())


def ensure_topics(
    access: KafkaAccess, config: KafkaConfig, specs: tuple[TopicSpec, ...] = DECLARED_TOPICS
) -> list[str]:
    """Create missing topics; return the names created. Idempotent."""
    admin = admin_client(access)
    existing = admin.list_topics(timeout=10).topics
    for spec in specs:
        if spec.name in existing and len(existing[spec.name].partitions) != config.partitions:
            raise TopicMismatch(
                f"topic {spec.name} has {len(existing[spec.name].partitions)} partitions, "
                f"configuration says {config.partitions}; keyed topics cannot be repartitioned "
                "in place (reset the local data with `make reset`)"
            )
    missing = [spec for spec in specs if spec.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=config.partitions, replication_factor=1, config=s.config()) for s in missing],
        operation_timeout=30,
    )
    for future in futures.values():
        future.result()
    _wait_for_leaders(admin, [spec.name for spec in missing])
    return [spec.name for spec in missing]


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float = 30.0) -> None:
    """New partitions have no leader for a moment; clients that start then log errors."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=10).topics
        if all(
            name in topics and topics[name].partitions and all(p.leader >= 0 for p in topics[name].partitions.values())
            for name in names
        ):
            return
        time.sleep(0.2)
    raise TimeoutError(f"topics {names} have partitions without a leader after {timeout:.0f}s")


def ensure_users(access: KafkaAccess, config: Config) -> list[str]:
    """Every principal but the admin (formatted into the broker) gets its current password.
    Idempotent: an upsert with the same password changes nothing a client can tell."""
    others = [p for p in PRINCIPALS if p != ADMIN]
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts = [UserScramCredentialUpsertion(p, info, kafka_login(config, p).password.encode()) for p in others]
    admin = admin_client(access)  # held while the futures run: they fail once the client is gone
    for future in admin.alter_user_scram_credentials(upserts).values():  # type: ignore[arg-type]
        future.result()
    return others


def bindings(grant: Grant) -> set[AclBinding]:
    def acl(kind: ResourceType, name: str, pattern: ResourcePatternType, operation: AclOperation) -> AclBinding:
        return AclBinding(kind, name, pattern, user(grant.principal), "*", operation, AclPermissionType.ALLOW)

    literal, prefixed = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    return (
        {acl(ResourceType.TOPIC, name, literal, AclOperation.READ) for name in grant.reads}
        | {acl(ResourceType.TOPIC, name, literal, AclOperation.WRITE) for name in grant.writes}
        | {acl(ResourceType.GROUP, name, literal, AclOperation.READ) for name in grant.groups}
        | {acl(ResourceType.GROUP, prefix, prefixed, AclOperation.READ) for prefix in grant.group_prefixes}
        | {acl(ResourceType.GROUP, name, literal, AclOperation.DESCRIBE) for name in grant.watches}
        | {acl(ResourceType.GROUP, prefix, prefixed, AclOperation.DESCRIBE) for prefix in grant.watch_prefixes}
        | {acl(ResourceType.TOPIC, name, literal, AclOperation.DESCRIBE) for name in grant.sees}
        | {acl(ResourceType.TOPIC, name, literal, AclOperation.DESCRIBE_CONFIGS) for name in grant.configs}
    )


def apply_acls(access: KafkaAccess, grants: tuple[Grant, ...] = GRANTS) -> tuple[int, int]:
    """Make the broker's ACLs for our principals exactly the grants': (created, removed). Idempotent."""
    admin = admin_client(access)
    ours = {user(p) for p in PRINCIPALS}
    wanted = set().union(*(bindings(g) for g in grants))
    anything: Any = None  # matches any name, principal and host
    everything = AclBindingFilter(
        ResourceType.ANY, anything, ResourcePatternType.ANY, anything, anything, AclOperation.ANY, AclPermissionType.ANY
    )
    present = {b for b in admin.describe_acls(everything).result() if b.principal in ours}
    missing, stale = wanted - present, present - wanted
    if missing:
        for future in admin.create_acls(list(missing)).values():
            future.result()
    if stale:
        exact = [
            AclBindingFilter(
                b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type
            )
            for b in stale
        ]
        for future in admin.delete_acls(exact).values():
            future.result()
    return len(missing), len(stale)


def cluster_id(access: KafkaAccess, timeout: float = 10.0) -> str | None:
    """The cluster's id, or None when the broker does not answer in `timeout`."""
    try:
        return str(admin_client(access).list_topics(timeout=timeout).cluster_id)
    except Exception:  # noqa: BLE001 - unreachable is the answer
        return None

"""Kafka administration: create the declared topics, check they match the declaration."""

from __future__ import annotations

import time

from confluent_kafka.admin import AdminClient, NewTopic

from connectors.config import KafkaConfig
from connectors.topics import DECLARED_TOPICS, TopicSpec


class TopicMismatch(RuntimeError):
    """An existing topic differs from its declaration (partitions cannot shrink)."""


def admin_client(config: KafkaConfig) -> AdminClient:
    return AdminClient({"bootstrap.servers": config.bootstrap_servers})


def ensure_topics(config: KafkaConfig, specs: tuple[TopicSpec, ...] = DECLARED_TOPICS) -> list[str]:
    """Create missing topics; return the names created. Idempotent."""
    admin = admin_client(config)
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


def cluster_id(config: KafkaConfig, timeout: float = 10.0) -> str | None:
    """The cluster's id, or None when the broker does not answer in `timeout`."""
    try:
        return str(admin_client(config).list_topics(timeout=timeout).cluster_id)
    except Exception:  # noqa: BLE001 - unreachable is the answer
        return None

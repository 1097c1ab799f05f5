"""How far a consumer group's commits are behind the end of its partitions."""

from __future__ import annotations

import asyncio
import time

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from connectors.config import Config
from tests.support.kafka import reader


async def commits_behind(
    config: Config, group: str, ends: dict[TopicPartition, int], timeout: float
) -> dict[TopicPartition, tuple[int, int]]:
    """Waits up to `timeout` for `group` to commit up to `ends`; returns the partitions still behind,
    each as (committed, end), committed -1 for a partition the group never committed."""
    # The console sees the workers' and projections' groups (DESCRIBE), never joins them.
    admin = AIOKafkaAdminClient(**reader(config).aiokafka())
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            committed = await admin.list_consumer_group_offsets(group, partitions=list(ends))
            offsets = {tp: committed[tp].offset if tp in committed else -1 for tp in ends}
            behind = {tp: (offsets[tp], end) for tp, end in ends.items() if offsets[tp] < end}
            if not behind or time.monotonic() > deadline:
                return behind
            await asyncio.sleep(0.2)
    finally:
        await admin.close()

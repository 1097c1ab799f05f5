"""Kafka requests this process sends, by kind (`kafka_client_requests_total`).

Most of what a payment costs here is paid per request, not per record: each produce or fetch is
a socket write, a broker wake-up and a response to parse. So requests per payment is the
efficiency figure that does not move with how busy the machine is (`make bench` prints it)."""

from __future__ import annotations

from typing import Any

from aiokafka.client import AIOKafkaClient
from prometheus_client import Counter

KAFKA_REQUESTS = Counter("kafka_client_requests_total", "Requests this process sent to Kafka", ["api"])

_original_send = AIOKafkaClient.send
_counters: dict[type, Any] = {}


async def _counted_send(self: AIOKafkaClient, node_id: Any, request: Any, **kwargs: Any) -> Any:
    kind = type(request)
    counter = _counters.get(kind)
    if counter is None:
        # FetchRequest_v4 -> Fetch: the version is the library's choice, not a kind of work.
        counter = _counters[kind] = KAFKA_REQUESTS.labels(kind.__name__.split("Request")[0])
    counter.inc()
    return await _original_send(self, node_id, request, **kwargs)


def count_kafka_requests() -> None:
    """Count every request of every aiokafka client in this process (idempotent)."""
    AIOKafkaClient.send = _counted_send

import asyncio

from connectors import kafka_requests


class FetchRequest_v4:  # named like aiokafka's request classes, whose label drops the version
    pass


def count(api: str) -> float:
    return kafka_requests.KAFKA_REQUESTS.labels(api)._value.get()


def test_each_request_is_counted_by_kind_without_its_version(monkeypatch):
    sent = []

    async def send(client, node_id, request, **kwargs):
        sent.append((node_id, request, kwargs))
        return "response"

    monkeypatch.setattr(kafka_requests, "_original_send", send)
    before = count("Fetch")
    request = FetchRequest_v4()
    answer = asyncio.run(kafka_requests._counted_send(None, 1, request, group=0))  # type: ignore[arg-type]
    assert answer == "response"
    assert sent == [(1, request, {"group": 0})]
    assert count("Fetch") == before + 1

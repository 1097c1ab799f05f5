"""A faust worker whose handler fails on request, built from the same pipeline as the real
workers (delivery guard, processor, dead letters, readiness), so the tests can drive the
failure paths on the real broker. Commands are JSON on `test.flaky.commands`:

    {"id": ..., "fail_times": 2}         raises twice, then succeeds
    {"id": ..., "always_fail": true}      raises every time: the message's fault
    {"id": ..., "outage_flag": "/path"}   raises an infrastructure error while the file exists

Each success writes {"id", "attempts"} to `test.flaky.outcomes`.

    python -m tests.support.flaky_worker worker --web-port PORT
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import faust
from aiokafka.errors import KafkaConnectionError

from connectors.avro import EventDecodeError, make_codec
from connectors.config import load_config
from connectors.credentials import ADMIN
from connectors.topics import PAYMENT_DLQ, TopicSpec
from streams.app import make_app, make_pipeline, make_sender, raw_topic
from streams.pages import add_worker_pages

COMMANDS = TopicSpec("test.flaky.commands", key="id")
OUTCOMES = TopicSpec("test.flaky.outcomes", key="id")
WEB_PORT = int(os.environ.get("FLAKY_WEB_PORT", "0"))

config = load_config()
codec = make_codec(None)
# The tests' own topics and group: no service principal may touch them, so it runs as admin.
app = make_app("flaky-worker", config, WEB_PORT, "memory://", ADMIN)
send = make_sender(app, codec)
pipeline = make_pipeline(app, config, codec, send, [COMMANDS, OUTCOMES, PAYMENT_DLQ])
attempts: Counter[str] = Counter()


def decode(value: bytes) -> dict[str, Any]:
    try:
        command = json.loads(value)
    except ValueError as exc:
        raise EventDecodeError(f"not JSON: {exc}") from exc
    return {"envelope": {"event_type": "FlakyCommand", "event_id": command.get("id")}, **command}


pipeline.processor.decode = decode


async def handle(command: dict[str, Any]) -> None:
    attempts[command["id"]] += 1
    if command.get("always_fail"):
        raise ValueError(f"command {command['id']} is refused, whatever the attempt")
    if attempts[command["id"]] <= command.get("fail_times", 0):
        raise RuntimeError(f"attempt {attempts[command['id']]} of {command['id']} fails on purpose")
    if command.get("outage_flag") and os.path.exists(command["outage_flag"]):
        raise KafkaConnectionError("the broker is away (simulated by the test)")
    outcome = json.dumps({"id": command["id"], "attempts": attempts[command["id"]]}).encode()
    await raw_topic(app, OUTCOMES.name).send(key=command["id"].encode(), value=outcome, force=True)


@app.agent(raw_topic(app, COMMANDS.name, config.kafka.partitions), concurrency=1)
async def process_flaky(stream: faust.StreamT) -> None:
    await pipeline.consume(stream, handle)


add_worker_pages(app, pipeline.processor, pipeline.guard, config.processing.stall_after_s)

if __name__ == "__main__":
    app.main()

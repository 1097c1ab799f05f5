"""The faust app factory shared by the workers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import faust

from connectors.avro import Codec, install_faust_codec, make_codec
from connectors.config import Config
from connectors.localinfra import state_dir
from connectors.logs import log_handler
from connectors.otel import setup_tracing
from connectors.tracing import outgoing_headers
from streams.processing import Handler, Processor, SourceMessage

Sender = Callable[[str, bytes | None, dict[str, Any]], Awaitable[None]]


def make_app(name: str, config: Config, web_port: int, store: str) -> faust.App:
    install_faust_codec(make_codec(config.kafka.schema_registry_url or None))
    datadir = state_dir(config) / "faust" / f"{name}-{web_port}"
    datadir.mkdir(parents=True, exist_ok=True)
    setup_tracing(name)
    return faust.App(
        name,
        broker=f"kafka://{config.kafka.bootstrap_servers}",
        store=store,
        # Per worker process, so two workers on one machine never share a local store.
        datadir=str(datadir),
        topic_partitions=config.kafka.partitions,
        web_port=web_port,
        web_host="127.0.0.1",
        canonical_url=f"http://127.0.0.1:{web_port}",
        broker_commit_interval=config.processing.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # A SIGKILLed worker holds its partitions until the session expires; faust's
        # default of 60 s is a minute of stalled payments after every crash.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        producer_linger=0.001,
        # Tables are read through our own views; faust's default exposes every table.
        web_tables_enabled=False,
        topic_disable_leader=True,
        # Every table write waits for the source offset commit: at least once.
        processing_guarantee="at_least_once",
        # JSON lines with event, payment, wallet and trace ids when log.json is set;
        # otherwise faust's own console format.
        loghandlers=[log_handler(config, name)] if config.log.json else [],
    )


def raw_topic(app: faust.App, name: str, partitions: int | None = None) -> faust.TopicT:
    """Agents take and give bytes: decoding is ours, so a decode error can be dead-lettered."""
    return app.topic(name, key_serializer="raw", value_serializer="raw", partitions=partitions)


def make_sender(app: faust.App, codec: Codec) -> Sender:
    async def send(topic: str, key: bytes | None, record: dict[str, Any]) -> None:
        # force=True: publish now, not at the next commit; the commit flushes the producer
        # before it moves the offset, so this stays at least once.
        await raw_topic(app, topic).send(key=key, value=codec.encode(record), headers=outgoing_headers(), force=True)

    return send


async def consume(stream: faust.StreamT, processor: Processor, handler: Handler) -> None:
    async for event in stream.events():
        message = event.message
        source = SourceMessage(
            message.topic, message.partition, message.offset, message.key, message.value, message.headers
        )
        await processor.process(source, handler)

"""The faust app factory shared by the workers, and how their agents consume: in batches.

An agent takes what its partitions already hold (up to `processing.batch_max` events, without
waiting for more: `streams/batching.py`), runs each event through the delivery guard and the
processor, and only then, once for the whole batch, makes the table writes durable and
publishes what the steps decided (`streams/durability.py`); faust acknowledges the batch after
that. So a batch costs one changelog round trip instead of one per event (two when a table's
writes must follow the others', as the wallet's follow its movement records), a SIGKILL anywhere
in it loses nothing (the events are redelivered, the decisions found in the recovered tables
re-emitted), and at low load a batch is one event and waits for nothing.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import faust
from faust.streams import _current_event
from faust.types import TP

from connectors.avro import Codec, install_faust_codec, make_codec
from connectors.config import Config, state_dir
from connectors.credentials import Login
from connectors.event_loop import use_event_loop
from connectors.kafka_admin import cluster_id
from connectors.kafka_security import KafkaAccess, kafka_access
from connectors.log_reader import PartitionReader
from connectors.logs import log_handler
from connectors.otel import setup_tracing
from connectors.topics import TopicSpec
from connectors.tracing import outgoing_headers
from streams.batching import take_available
from streams.delivery import DeliveryGuard
from streams.durability import CURRENT_BATCH, Batch, ChangelogAcks, release
from streams.local_store import match_store_to_log
from streams.ports import Sender
from streams.processing import Handler, Processor, SourceMessage
from streams.rocksdb_store import use_closing_rocksdb_store
from streams.table_codec import install_table_codec

log = logging.getLogger(__name__)
Steps = TypeVar("Steps")


def make_app(name: str, config: Config, web_port: int, store: str, principal: str | None = None) -> faust.App:
    """The worker `name` (its consumer group) connects to Kafka as `principal`, by default the
    principal of the same name."""
    install_faust_codec(make_codec(config.kafka.schema_registry_url or None))
    install_table_codec()
    datadir = state_dir(config) / "faust" / f"{name}-{web_port}"
    datadir.mkdir(parents=True, exist_ok=True)
    if store.startswith("rocksdb"):
        use_closing_rocksdb_store()
        match_store_to_log(datadir, lambda: cluster_id(kafka_access(config, principal or name)))
    setup_tracing(name)
    use_event_loop(config)
    return faust.App(
        name,
        broker=f"kafka://{config.kafka.bootstrap_servers}",
        broker_credentials=kafka_access(config, principal or name).faust_credentials(),
        # Setup creates every topic, changelogs included (connectors/topics.py), so a worker
        # needs no CREATE ACL; faust would otherwise ask to create its changelogs on start.
        topic_allow_declare=False,
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
        # Static membership: a restarted process (same worker, same web port) takes its partitions
        # back at once instead of waiting out the dead one's session and a rebalance.
        consumer_group_instance_id=f"{name}-{web_port}",
        # Under load the producer fills batches within this; at low load it is the wait per hop.
        producer_linger=config.processing.producer_linger_s,
        # Fetch many records per poll and let a stream buffer them: per-record broker work
        # falls several fold (NOTES: relay CPU ~250 -> ~160 us, broker ~60 -> ~13 us a record).
        broker_max_poll_records=2000,
        stream_buffer_maxsize=16384,
        consumer_max_fetch_size=4 * 1024 * 1024,
        # Tables are read through our own views; faust's default exposes every table.
        web_tables_enabled=False,
        topic_disable_leader=True,
        # Every table write waits for the source offset commit: at least once.
        processing_guarantee="at_least_once",
        # Our lines alone, plain or JSON as log.json says, with the request, event, payment,
        # wallet and trace ids (connectors/logs.py): an empty root replaces faust's console
        # handler, whose lines had none of them.
        loghandlers=[log_handler(config, name)],
        logging_config={
            "version": 1,
            "disable_existing_loggers": False,
            "root": {"level": config.log.level, "handlers": []},
        },
    )


def app_access(app: faust.App, config: Config) -> KafkaAccess:
    """The access the app's own clients use, for the clients we open beside them."""
    credentials = app.conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials) and credentials.username and credentials.password
    return KafkaAccess(config.kafka.bootstrap_servers, Login(credentials.username, credentials.password))


def raw_topic(app: faust.App, name: str, partitions: int | None = None) -> faust.TopicT:
    """Agents take and give bytes: decoding is ours, so a decode error can be dead-lettered."""
    return app.topic(name, key_serializer="raw", value_serializer="raw", partitions=partitions)


def make_sender(app: faust.App, codec: Codec) -> Sender:
    topics: dict[str, faust.TopicT] = {}  # built once: a topic object per send costs ~50 us

    async def send(topic: str, key: bytes | None, record: dict[str, Any]) -> None:
        target = topics.get(topic) or topics.setdefault(topic, raw_topic(app, topic))
        value, headers = codec.encode(record), outgoing_headers()
        batch = CURRENT_BATCH.get()
        if batch is not None:
            batch.outbox.append((target, key, value, headers))
            return
        # Outside a batch (a timer): publish now. force=True: not at the next commit; the
        # commit flushes the producer before it moves the offset, so this stays at least once.
        await target.send(key=key, value=value, headers=headers, force=True)

    return send


@dataclass
class Pipeline:
    """How a worker's agents consume: the delivery guard (every offset, in order), then the
    processor (retries, pauses, dead letters). A failure neither contains stops the worker
    instead of letting faust acknowledge a message that was not handled."""

    app: faust.App
    processor: Processor
    guard: DeliveryGuard
    reader: PartitionReader
    needs: dict[str, int]  # topic -> partitions this worker cannot work without
    batch_max: int = 500
    fill_wait_s: float = 0.0
    fill_from: int = 0
    changelogs: ChangelogAcks = field(default_factory=ChangelogAcks)

    async def consume(self, stream: faust.StreamT, handler: Handler) -> None:
        self.changelogs.watch(self.app.producer)
        batches = take_available(stream, self.batch_max, self.fill_wait_s, self.fill_from)
        async for events in batches:
            batch = Batch()
            token = CURRENT_BATCH.set(batch)
            try:
                for event in events:
                    # A table write goes to the changelog partition of the event being handled;
                    # faust knows it only inside its own iteration, so we say which it is.
                    _current_event.set(weakref.ref(event))
                    await self._handle(event.message, handler)
            finally:
                _current_event.set(None)
                CURRENT_BATCH.reset(token)
            await self._release(batch)

    async def _handle(self, message: Any, handler: Handler) -> None:
        source = SourceMessage(
            message.topic, message.partition, message.offset, message.key, message.value, message.headers
        )
        try:
            admitted = await self._admit(source)
            for message_now in admitted:
                await self.processor.process(message_now, handler)
                self.guard.done(message_now)
            if len(admitted) > 1:
                # faust never handed out the records the guard read back, so its commit would
                # wait for them for ever (a gap at the head of its acknowledged offsets): they are
                # handled, say so. The message that revealed them is acknowledged after the batch.
                tp = TP(source.topic, source.partition)
                await self.app.consumer._add_gap(tp, admitted[0].offset, admitted[-2].offset)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - re-raised after the worker is stopped
            await self._stop_worker(f"cannot handle {source.topic}@{source.partition}/{source.offset}", exc)

    async def _release(self, batch: Batch) -> None:
        """State before outcome (streams/durability.py); faust acknowledges the batch only after
        this returns."""
        try:
            await release(batch, self.changelogs.all_acked, self._publish)
        except Exception as exc:  # noqa: BLE001 - re-raised after the worker is stopped
            await self._stop_worker("cannot make a batch durable or publish its outcomes", exc)

    @staticmethod
    async def _publish(topic: faust.TopicT, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        await topic.send(key=key, value=value, headers=headers, force=True)

    async def durable(self) -> None:
        """Make every table write so far durable on its changelog before what was decided is published.

        If the worker dies after publishing, the redelivered message must find the decision in the
        recovered table and re-emit it, never decide again against older state. Inside a batch
        the wait is the batch's (see `_release`), once for all its writes."""
        batch = CURRENT_BATCH.get()
        if batch is not None:
            batch.dirty = True
            return
        self.changelogs.watch(self.app.producer)
        await self.changelogs.all_acked()

    async def _stop_worker(self, what: str, exc: Exception) -> None:
        log.critical("%s: %s: %r; stopping the worker", self.app.conf.id, what, exc)
        await self.app.crash(exc)
        raise exc

    async def _admit(self, source: SourceMessage) -> list[SourceMessage]:
        pauses = 0
        while True:
            try:
                return await self.guard.admit(source)
            except Exception as exc:  # noqa: BLE001 - reading Kafka failed: an outage, wait it out
                pauses += 1
                await self.processor.pause(source, f"cannot check delivery: {exc!r}", pauses)

    async def broker_problem(self) -> str | None:
        """What is wrong with the broker or this worker's topics, or None when they look healthy."""
        try:
            missing = await self.reader.missing_topics(self.needs)
        except Exception as exc:  # noqa: BLE001 - unreachable is the answer
            return f"broker unreachable: {exc!r}"
        return f"topics missing or with other partition counts: {', '.join(missing)}" if missing else None


def add_agent(app: faust.App, pipeline: Pipeline, source: faust.TopicT, step: Handler, module: str) -> None:
    """An agent named after the step it performs, consuming `source` through the pipeline.
    Concurrency 1: one writer per partition (faust #606 loses messages with more)."""

    async def agent(stream: faust.StreamT) -> None:
        await pipeline.consume(stream, step)

    app.agent(source, concurrency=1, name=f"{module}.{step.__name__}")(agent)


def make_pipeline(app: faust.App, config: Config, codec: Codec, send: Sender, needs: list[TopicSpec]) -> Pipeline:
    reader = PartitionReader(app_access(app, config), app.conf.id)
    guard = DeliveryGuard(app.conf.id, reader, lambda: app.consumer_generation_id)
    processor = Processor(
        app.conf.id, codec.decode, send, config.processing.max_attempts, config.processing.retry_backoff_s
    )
    pipeline = Pipeline(
        app,
        processor,
        guard,
        reader,
        {spec.name: config.kafka.partitions for spec in needs},
        config.processing.batch_max,
        config.processing.fill_wait_s,
        config.processing.fill_from,
    )
    processor.probe = pipeline.broker_problem
    return pipeline


@dataclass
class Worker(Generic[Steps]):
    """What a worker's bootstrap built: the app faust runs, its saga steps, their pipeline."""

    app: faust.App
    steps: Steps
    pipeline: Pipeline

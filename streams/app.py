"""The faust app factory shared by the workers."""

from __future__ import annotations

import faust

from connectors.avro import install_faust_codec, make_codec
from connectors.config import Config


def make_app(name: str, config: Config, web_port: int, store: str) -> faust.App:
    install_faust_codec(make_codec(config.kafka.schema_registry_url or None))
    return faust.App(
        name,
        broker=f"kafka://{config.kafka.bootstrap_servers}",
        store=store,
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
        producer_linger_ms=1,
        # Tables are read through our own views; faust's default exposes every table.
        web_tables_enabled=False,
        topic_disable_leader=True,
        # Every table write waits for the source offset commit: at least once.
        processing_guarantee="at_least_once",
    )

"""A minimal worker for the routing test: the state page over a table fed by one topic, and
an agent that also copies a message to the topic named in it, so that the test can make the
producer fetch metadata for a topic created after the worker started (as a worker's own
changelog topics are on a fresh broker).

    PROBE_APP=... PROBE_SOURCE=... python -m tests.integration.routing_probe_worker worker --web-port N
"""

from __future__ import annotations

import json
import os

import faust

from connectors.config import load_config
from connectors.credentials import ADMIN
from domain.access import Action
from streams.app import make_app, raw_topic
from streams.pages import add_worker_pages
from streams.state_page import add_state_page

config = load_config()
port = int(os.environ["PROBE_PORT"])
# A test's own app, topics and group: admin's, and faust creates the probe's changelog itself.
app = make_app(os.environ["PROBE_APP"], config, port, "memory://", ADMIN)
app.conf.topic_allow_declare = True
source = raw_topic(app, os.environ["PROBE_SOURCE"], config.kafka.partitions)
states = app.Table("states", default=None, partitions=config.kafka.partitions)


@app.agent(source)
async def record(stream: faust.StreamT) -> None:
    async for event in stream.events():
        value = json.loads(event.value)
        states[event.key.decode()] = value
        if value.get("echo_to"):
            await raw_topic(app, value["echo_to"]).send(key=event.key, value=event.value, force=True)


add_worker_pages(app)
add_state_page(app, config, "/states", source, states, "id", Action.READ_WALLET)

if __name__ == "__main__":
    app.main()

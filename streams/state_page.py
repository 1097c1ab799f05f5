"""GET {path}/{id}/ on a worker: one aggregate's live table state, behind the APIs' door.

The same credentials and ownership rules as the REST APIs: 401 without a valid credential,
403 for a role that may not read, 404 for another user's aggregate exactly as for a missing
one; operators and admins see all. Secrets (a payment's provider token) are never shown.

Only the worker that owns the id's partition holds the aggregate. Any other worker forwards
the request there with the caller's credentials, and the owner checks them again, since only
it knows who owns the aggregate. The partition is the murmur2 partition every producer
picks, computed here; its owner comes from faust's assignor. faust's own `topic_route` asks
the worker's *producer* for the partition, and a producer has no metadata for a topic the
worker only consumes until something else fetches it: on a fresh worker every routed
request failed with `TypeError: 'NoneType' object is not iterable` (a 500).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import faust
from faust.types.tables import TableT
from yarl import URL

from connectors.auth import API_KEY_HEADER, Authenticator, AuthError
from connectors.config import Config
from connectors.log_reader import partition_for
from connectors.tracing import TRACEPARENT_HEADER
from domain.access import Action, Decision, decide, may
from domain.ids import is_uuid

# Set on a forwarded request: the receiver answers it itself, so a stale assignment can
# never bounce a request between two workers.
ROUTED_BY_HEADER = "X-Routed-By"
SERVED_BY_HEADER = "X-Served-By"
FORWARDED_HEADERS = ("Authorization", API_KEY_HEADER, TRACEPARENT_HEADER)
FORWARD_TIMEOUT_S = 5.0


def owner_url(app: faust.App, topic: str, partition: int) -> URL | None:
    """The advertised URL of the worker consuming this partition, per the last assignment."""
    for url, topics in app.assignor.external_topics_metadata().items():  # type: ignore[attr-defined]
        if partition in topics.get(topic, ()):
            return URL(url)
    return None


def error(
    view: Any, status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> Any:
    return view.json({"error": {"code": code, "message": message, "field": field}}, status=status, headers=headers)


def add_state_page(
    app: faust.App,
    config: Config,
    path: str,
    source: faust.TopicT,
    table: TableT,
    id_name: str,
    action: Action,
    hidden: frozenset[str] = frozenset(),
) -> None:
    """The page; the table's values are dicts with the owning user in "user_id"."""
    authenticator = Authenticator(config.auth)
    topic = source.get_topic_name()
    me = URL(str(app.conf.canonical_url))

    async def forward(view: Any, request: Any, owner: URL) -> Any:
        headers = {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}
        headers[ROUTED_BY_HEADER] = str(me)
        timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
        try:
            async with app.http_client.get(owner.with_path(request.path), headers=headers, timeout=timeout) as answer:
                kept = {k: answer.headers[k] for k in (SERVED_BY_HEADER, "WWW-Authenticate") if k in answer.headers}
                body = await answer.read()
                return view.bytes(body, content_type="application/json", status=answer.status, headers=kept)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return error(view, 502, "owner_unreachable", f"the worker owning this partition did not answer: {exc!r}")

    @app.page(f"{path}/{{{id_name}}}/")
    async def state(view: Any, request: Any, **match: str) -> Any:
        try:
            caller, _ = authenticator.authenticate(
                request.headers.get("Authorization"), request.headers.get(API_KEY_HEADER)
            )
        except AuthError as exc:
            return error(view, 401, "unauthenticated", str(exc), headers={"WWW-Authenticate": "Bearer"})
        if not may(caller, action):
            return error(view, 403, "forbidden", f"your roles ({', '.join(sorted(caller.roles))}) may not read this")
        key = match[id_name]
        if not is_uuid(key):
            return error(view, 422, "invalid_id", f"{id_name} must be a UUID", id_name)
        key = key.lower()
        owner = None if app.rebalancing else owner_url(app, topic, partition_for(key, config.kafka.partitions))
        if owner != me:
            if owner is None or ROUTED_BY_HEADER in request.headers:
                # Partitions are moving (or moved since the sender looked): only the owner may
                # say "not found", so ask again shortly.
                return error(
                    view, 503, "not_assigned", "partitions are being reassigned; retry", headers={"Retry-After": "1"}
                )
            return await forward(view, request, owner)
        value = table.get(key)
        if value is None or decide(caller, action, value["user_id"]) is not Decision.ALLOW:
            return error(view, 404, "not_found", f"{key} not found", id_name, {SERVED_BY_HEADER: str(me)})
        shown = {name: v for name, v in value.items() if name not in hidden}
        return view.json(shown, headers={SERVED_BY_HEADER: str(me)})

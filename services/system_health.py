"""One answer to "is the system healthy?", for `payments health` and the gateway's
GET /api/v1/system/health alike: every service's readiness page, each consumer group's lag
and members, the dead letters, the oldest event the views do not hold yet, the money
auditor's open violations and the last saga that completed.

Each check is ok, warn (worth a look, not an outage: dead letters are parked, not lost) or
fail; the system is healthy when nothing fails. It asks afresh every time: an answer kept
would hide the very outage it is asked about. Kafka is asked as the `health` principal
(connectors/kafka_acl.py), which may describe the topics and the worker and projector groups
but read no event: the internet-facing gateway holds no credential that reads the books."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import aiohttp
from confluent_kafka.admin import OffsetSpec
from prometheus_client.parser import text_string_to_metric_families

from connectors.config import Config
from connectors.credentials import HEALTH
from connectors.kafka_acl import PROJECTOR_GROUP_PREFIX
from connectors.kafka_security import kafka_access
from connectors.kafka_watch import Group, KafkaWatch
from connectors.topics import PAYMENT_DLQ, PAYMENT_FAILED, PAYMENT_SUCCEEDED, PAYMENT_WORKER, WALLET_WORKER
from services.projector import PROJECTIONS

OK, WARN, FAIL = "ok", "warn", "fail"
PROBE_TIMEOUT_S = 3.0  # a readiness page slower than this counts as not ready
KAFKA_TIMEOUT_S = 10.0
MAX_LAG = 10_000  # messages a group may be behind before it counts as failing
RECENT_S = 24 * 3600  # dead letters of the last day are worth a look; older ones were seen


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # OK, WARN or FAIL
    detail: str
    value: Any = None  # the figure behind the detail, for machines


@dataclass(frozen=True)
class Health:
    checks: list[Check]
    checked_at: float

    @property
    def healthy(self) -> bool:
        return all(check.state != FAIL for check in self.checks)

    def failing(self) -> list[str]:
        return [check.name for check in self.checks if check.state == FAIL]

    def json(self) -> dict[str, Any]:
        return {
            "status": "healthy" if self.healthy else "unhealthy",
            "checked_at": iso(self.checked_at),
            "failing": self.failing(),
            "checks": [{"check": c.name, "state": c.state, "detail": c.detail, "value": c.value} for c in self.checks],
        }

    def table(self) -> str:
        width = max(len(check.name) for check in self.checks) + 2
        lines = [f"{'check':<{width}}{'state':<7}detail"]
        lines += [f"{c.name:<{width}}{c.state:<7}{c.detail}" for c in self.checks]
        verdict = "healthy" if self.healthy else f"UNHEALTHY: {', '.join(self.failing())}"
        return "\n".join([*lines, f"system {verdict} ({iso(self.checked_at)})"])


def iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).isoformat(timespec="seconds")


def readiness_pages(config: Config) -> dict[str, str]:
    """Every service's readiness page (the workers' faust pages end in a slash)."""
    local = "http://127.0.0.1"
    return {
        "payment-api": f"{local}:{config.payment_api.port}/ready",
        "wallet-api": f"{local}:{config.wallet_api.port}/ready",
        "payment-worker": f"{local}:{config.payment_worker.web_port}/ready/",
        "wallet-worker": f"{local}:{config.wallet_worker.web_port}/ready/",
        "projector": f"{local}:{config.projector.metrics_port}/ready",
        "auditor": f"{local}:{config.auditor.port}/ready",
        "gateway": f"{local}:{config.gateway.port}/ready",
        "provider-simulator": f"{local}:{config.provider.port}/ready",
        "web-console": f"{local}:{config.web_console.port}/ready",
    }


def worker_groups() -> list[str]:
    return [WALLET_WORKER, PAYMENT_WORKER, *(PROJECTOR_GROUP_PREFIX + p.name for p in PROJECTIONS)]


async def system_health(config: Config) -> Health:
    """Every check, asked at once."""
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        found = await asyncio.gather(
            ready_checks(http, config),
            guarded("kafka", kafka_checks(config)),
            guarded("oldest unprojected event", oldest_unprojected(http, config)),
            guarded("money violations", open_violations(http, config)),
        )
    return Health([check for checks in found for check in checks], time.time())


async def guarded(name: str, checks: Awaitable[list[Check]]) -> list[Check]:
    """The checks, or one failing check saying why they could not be asked."""
    try:
        return await checks
    except Exception as exc:  # noqa: BLE001 - an unanswered check is a failing one, whatever the cause
        return [Check(name, FAIL, f"could not ask: {type(exc).__name__}: {exc}".rstrip(": "))]


async def ready_checks(http: aiohttp.ClientSession, config: Config) -> list[Check]:
    pages = readiness_pages(config)
    answers = await asyncio.gather(*(ready_answer(http, url) for url in pages.values()))
    return [Check(f"ready: {name}", state, detail) for name, (state, detail) in zip(pages, answers, strict=True)]


async def service_readiness(config: Config) -> dict[str, Check]:
    """Each service's readiness alone, by name (`make status`)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)) as http:
        return dict(zip(readiness_pages(config), await ready_checks(http, config), strict=True))


async def ready_answer(http: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    try:
        async with http.get(url) as response:
            if response.status == 200:
                return OK, "ready"
            return FAIL, f"unready ({response.status}): {unready_reason(await response.json(content_type=None))}"
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return FAIL, f"not answering on {url} ({type(exc).__name__})"


def unready_reason(body: Any) -> str:
    """What a readiness body says is wrong: the services' `problems`, or a worker's flags."""
    if not isinstance(body, dict):
        return "no reason given"
    if body.get("problems"):
        return ", ".join(f"{k}: {v}" for k, v in body["problems"].items())
    wrong = []
    for key, value in body.items():
        if isinstance(value, bool):
            if value == (key == "rebalancing"):  # rebalancing is the one flag that is bad when set
                wrong.append(f"{key}={value}")
        elif key != "status" and value:
            wrong.append(f"{key}={value}")
    return ", ".join(wrong) or "no reason given"


async def kafka_checks(config: Config) -> list[Check]:
    watch = KafkaWatch(kafka_access(config, HEALTH), KAFKA_TIMEOUT_S / 2)
    # librdkafka blocks: a thread of its own, which gives up at the request timeouts.
    return await asyncio.wait_for(asyncio.to_thread(ask_kafka, watch), KAFKA_TIMEOUT_S * 2)


def ask_kafka(watch: KafkaWatch) -> list[Check]:
    return [
        *(group_check(watch, group) for group in watch.groups(worker_groups())),
        dead_letters(watch),
        last_completion(watch),
    ]


def group_check(watch: KafkaWatch, group: Group) -> Check:
    ends = watch.ends(group.committed)
    lag = sum(max(0, ends[tp] - offset) for tp, offset in group.committed.items())
    detail = f"{lag} behind on {len(group.committed)} partitions, {group.members} member(s), {group.state}"
    # A group nobody consumes in leaves whatever arrives waiting, whatever its lag says now.
    failing = group.members == 0 or lag > MAX_LAG
    return Check(f"lag: {group.name}", FAIL if failing else OK, detail, lag)


def dead_letters(watch: KafkaWatch) -> Check:
    tps = watch.partitions(PAYMENT_DLQ.name)
    starts, ends = watch.offsets(tps, OffsetSpec.earliest()), watch.ends(tps)
    since = watch.offsets(tps, OffsetSpec.for_timestamp(int((time.time() - RECENT_S) * 1000)))
    total = sum(ends[tp] - starts[tp][0] for tp in tps)
    # No record at or after the time: the offset is -1, and none of them is recent.
    recent = sum(ends[tp] - since[tp][0] for tp in tps if since[tp][0] >= 0)
    detail = f"{total} on {PAYMENT_DLQ.name}, {recent} in the last 24 h (`payments dlq list`)"
    return Check("dead letters", WARN if recent else OK, detail, total)


def last_completion(watch: KafkaWatch) -> Check:
    """The newest broker timestamp on the saga's terminal topics (ListOffsets MAX_TIMESTAMP, KIP-734)."""
    tps = watch.partitions(PAYMENT_SUCCEEDED.name, PAYMENT_FAILED.name)
    newest = max((stamp for _, stamp in watch.offsets(tps, OffsetSpec.max_timestamp()).values()), default=-1)
    if newest < 0:
        return Check("last saga completion", OK, "none yet")
    ago = max(0.0, time.time() - newest / 1000)
    return Check("last saga completion", OK, f"{iso(newest / 1000)} ({ago:.0f} s ago)", round(ago, 3))


async def oldest_unprojected(http: aiohttp.ClientSession, config: Config) -> list[Check]:
    """The projector's own measure (projection_oldest_unprojected_age_seconds), the oldest of all."""
    async with http.get(f"http://127.0.0.1:{config.projector.metrics_port}/metrics") as response:
        text = await response.text()
    ages = [
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "projection_oldest_unprojected_age_seconds"
        for sample in family.samples
    ]
    oldest = max(ages, default=0.0)
    limit = config.processing.stall_after_s
    detail = "the views hold every event" if not oldest else f"{oldest:.1f} s old (fails past {limit:g} s)"
    return [Check("oldest unprojected event", FAIL if oldest > limit else OK, detail, oldest)]


async def open_violations(http: aiohttp.ClientSession, config: Config) -> list[Check]:
    async with http.get(f"http://127.0.0.1:{config.auditor.port}/violations") as response:
        violations = await response.json()
    open_ = [v for v in violations if not v.get("cleared")]
    kinds = sorted({str(v.get("invariant")) for v in open_})
    detail = f"{len(open_)} open" + (f" ({', '.join(kinds)})" if kinds else "") + f", {len(violations)} found in all"
    return [Check("money violations", FAIL if open_ else OK, detail, len(open_))]

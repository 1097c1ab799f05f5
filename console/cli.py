"""The operator's console: where is a payment and why, straight from the log.

    payments trace ID [--follow] [--json] [--since-hours H]
    payments tail TOPIC [--from-beginning | --offset N | --since 5m] [--key KEY] [--json] [--max N]
    payments dlq list [--json]
    payments dlq replay OFFSET... [--partition P] | --all
    payments rebuild [--compare-only] [--keep]
    payments health [--json]

The log is the source of truth, so everything here reads Kafka directly and
never trusts the views; `rebuild` checks the views against the log.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TextIO

from aiokafka.errors import KafkaError

from connectors.config import Config, ConfigError, load_config
from console.dlq import dlq_list, dlq_replay
from console.entries import parse_since
from console.health import health
from console.rebuild import rebuild
from console.sources import ConsoleError
from console.tail import tail
from console.trace import trace


def since_arg(text: str) -> int:
    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="payments", description="Trace, tail and repair the payment system's log.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("trace", help="every event about a payment or wallet id, in time order")
    t.add_argument("id")
    t.add_argument("--follow", action="store_true", help="keep watching for new events until Ctrl-C")
    t.add_argument("--json", action="store_true", help="one JSON object per line")
    t.add_argument("--since-hours", type=float, help="only events of the last H hours")
    ta = sub.add_parser("tail", help="decoded events of one topic as they arrive")
    ta.add_argument("topic")
    where = ta.add_mutually_exclusive_group()
    where.add_argument("--from-beginning", action="store_true")
    where.add_argument("--offset", type=int, help="start at this offset (on every partition read)")
    where.add_argument("--since", type=since_arg, help="5m, 2h, 1d ago or an ISO-8601 time")
    ta.add_argument("--key", help="only this key (reads only the partition it maps to)")
    ta.add_argument("--json", action="store_true")
    ta.add_argument("--max", type=int, help="stop after N events")
    d = sub.add_parser("dlq", help="dead letters on payment.dlq")
    dsub = d.add_subparsers(dest="dlq_command", required=True)
    dl = dsub.add_parser("list", help="every dead letter with its reason and source")
    dl.add_argument("--json", action="store_true")
    dr = dsub.add_parser("replay", help="produce dead letters' original bytes back to their source topic")
    dr.add_argument("offsets", type=int, nargs="*", help="offsets on payment.dlq, as `dlq list` prints them")
    dr.add_argument("--partition", type=int, help="the payment.dlq partition of those offsets")
    dr.add_argument("--all", action="store_true", help="replay every dead letter")
    r = sub.add_parser("rebuild", help="rebuild the views from the log in a side schema and compare")
    r.add_argument("--compare-only", action="store_true", help="never touch the live views (the only mode)")
    r.add_argument("--keep", action="store_true", help="keep the rebuild schema for inspection")
    r.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the live projector")
    h = sub.add_parser("health", help="every readiness, lag, dead letters, violations: exit 1 when unhealthy")
    h.add_argument("--json", action="store_true", help="the same JSON as GET /api/v1/system/health")
    return p


async def run(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    if args.command == "trace":
        return await trace(config, args.id, args.follow, args.json, args.since_hours, out)
    if args.command == "tail":
        start = "beginning" if args.from_beginning else "end"
        return await tail(config, args.topic, start, args.offset, args.since, args.key, args.json, args.max, out)
    if args.command == "dlq" and args.dlq_command == "list":
        return await dlq_list(config, args.json, out)
    if args.command == "dlq":
        if not args.all and not args.offsets:
            raise ConsoleError("name the dead letters to replay (offsets from `payments dlq list`) or pass --all")
        return await dlq_replay(config, args.offsets, args.partition, args.all, out)
    if args.command == "health":
        return await health(config, args.json, out)
    return await rebuild(config, args.compare_only, args.keep, args.wait, out)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = load_config()
        return asyncio.run(run(args, config, sys.stdout))
    except ConfigError as exc:
        print(f"payments: configuration: {exc}", file=sys.stderr)
    except ConsoleError as exc:
        print(f"payments: {exc}", file=sys.stderr)
    except KafkaError as exc:
        print(f"payments: Kafka error {exc!r}: check `make status`", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""python -m tests.chaos [--fast] [scenario ...]: run the fault scenarios against the running
environment (ENVIRONMENT, never local/dev), one line each; exit 1 on any violation."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from connectors.config import load_config
from devtools.devctl import Supervisor, processes
from devtools.localinfra import kafka_reachable
from tests.chaos.scenarios import SCENARIOS, ensure_running, run_scenario


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--fast", action="store_true", help="only the scenarios CI runs")
    parser.add_argument("names", nargs="*", metavar="scenario", help=", ".join(s.name for s in SCENARIOS))
    args = parser.parse_args(argv)
    unknown = set(args.names) - {s.name for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    config = load_config()
    if config.environment in ("local", "dev"):
        print("the fault suite kills services: run it in the test environment (make chaos)", file=sys.stderr)
        return 2
    if not kafka_reachable(config):
        print(f"no Kafka on {config.kafka.bootstrap_servers}: make chaos starts it", file=sys.stderr)
        return 2
    # Reconnect noise while the broker is down is expected; the scenario reports what matters.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    chosen = [s for s in SCENARIOS if (not args.names or s.name in args.names) and not (args.fast and s.slow)]
    supervisor = Supervisor(config)
    await ensure_running(supervisor, *processes(config))
    failed = 0
    try:
        for scenario in chosen:
            report = await run_scenario(config, supervisor, scenario)
            print(report.line(), flush=True)
            failed += not report.ok
    finally:
        for process in reversed(processes(config)):
            supervisor.stop(process.name)
    print(f"chaos: {len(chosen) - failed} of {len(chosen)} scenarios passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

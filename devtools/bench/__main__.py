"""Benchmark: wallet payments through the public REST API, beside a chain of bare relays.

    python -m devtools.bench [--mode fixed --rate 50 --duration 20 | --mode max] [--environment bench]

Brings the environment up (or reuses it), creates hot and cold wallets, drives
payments open-loop (the schedule does not wait for responses, so a slow system
cannot slow the load down and hide its own latency), and times each payment from
its scheduled send to the arrival of its terminal event on the log. Then it drives
a chain of minimal relay processes (consume, produce, nothing else) with as many
hops as a wallet payment crosses, on the same broker, at the same rates. Writes
results/bench-<timestamp>.json and a PNG next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import sys
import time
from typing import Any

import asyncpg

from connectors.config import Config, load_config
from devtools import devctl, localinfra
from devtools.bench.measure import (
    MAX_LADDER,
    RESULTS,
    CpuWindow,
    Step,
    end_offsets_total,
    machine_busy,
    percentile,
    say,
    stack_pids,
)
from devtools.bench.relay import RawChain, relay
from devtools.bench.report import headline, plot, table
from devtools.bench.stack import OurStack, prepare_wallets

# ---------------------------------------------------------------- orchestration


def stack_settings(config: Config) -> dict[str, Any]:
    """What shapes the numbers, read from the code and configuration that run."""
    from services import payment_api
    from streams.app import make_app

    conf = make_app("bench-settings", config, config.payment_worker.web_port, "memory://").conf
    return {
        "environment": config.environment,
        "cores": os.cpu_count(),
        "partitions": config.kafka.partitions,
        "workers": "1 payment-worker + 1 wallet-worker process, agent concurrency 1",
        "broker_commit_interval_s": conf.broker_commit_interval,
        "broker_commit_every": conf.broker_commit_every,
        "producer_linger_ms": round(conf.producer_linger * 1000),
        "producer_acks": conf.producer_acks,
        "producer_max_batch_size": conf.producer_max_batch_size,
        "stream_buffer_maxsize": conf.stream_buffer_maxsize,
        "broker_max_poll_records": conf.broker_max_poll_records,
        "processing_guarantee": str(conf.processing_guarantee),
        "api_publisher": "acks=all, idempotent, linger_ms=1",
        "api_wait": (
            f"terminal event from Kafka, then the view row every {payment_api.SETTLE_POLL_S * 1000:.0f} ms"
            if hasattr(payment_api, "SETTLE_POLL_S")
            else f"poll PostgreSQL every {payment_api.POLL_S * 1000:.0f} ms"
        )
        + f", up to {config.payment_api.outcome_timeout_s:g} s",
        "projector": "getmany 1000 records, one transaction per partition batch",
    }


def ensure_stack(config: Config) -> None:
    """Start what is missing; a process that is alive but reports unready is used anyway."""
    supervisor = devctl.Supervisor(config)
    missing = [p for p in devctl.processes(config) if not supervisor.pid(p.name)]
    if localinfra.kafka_reachable(config) and not missing:
        say(f"reusing the running {config.environment} environment")
        return
    say(f"bringing the {config.environment} environment up ({', '.join(p.name for p in missing)} not running)...")
    localinfra.up(config)
    devctl.setup(config)
    for process in missing:
        supervisor.start(process)
    for process in missing:
        try:
            supervisor.wait_healthy(process, timeout=60)
        except localinfra.InfraError as exc:
            if not supervisor.pid(process.name):
                raise
            say(f"warning: {exc}; it runs, so the benchmark goes on")


async def measure(step_coro: Any, pids: dict[str, list[int]], bootstrap: str, prefix: str | None) -> Step:
    records_before = await end_offsets_total(bootstrap, prefix)
    window, busy_before = CpuWindow.open(pids), machine_busy()
    started = time.monotonic()
    step: Step = await step_coro
    step.cpu = window.close(pids)
    busy_after = machine_busy()
    step.machine_busy_pct = round(100 * (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1]), 1)
    step.records_per_s = round(
        (await end_offsets_total(bootstrap, prefix) - records_before) / (time.monotonic() - started), 1
    )
    return step


async def bench(args: argparse.Namespace, config: Config) -> dict[str, Any]:
    settings = stack_settings(config)
    rates = [args.rate] if args.mode == "fixed" else list(MAX_LADDER)
    step_s = args.duration if args.mode == "fixed" else args.step_duration
    wallets = await prepare_wallets(config, args.hot, args.cold)
    ours = OurStack(config, wallets, args.hot_share, args.fail_share)
    pool = await asyncpg.create_pool(config.postgres.dsn, min_size=1, max_size=2)
    await ours.tail.start()
    stop = asyncio.Event()
    watcher = asyncio.create_task(ours.watch_projection(pool, stop))
    our_steps: list[Step] = []
    bench_pid = {"bench (load generator)": [os.getpid()]}
    try:
        await ours.run(5, 2)  # warm-up: connections, faust fetchers, the first PostgreSQL plans
        for rate in rates:
            say(f"our stack at {rate:g} payments/s for {step_s:g} s")
            step = await measure(
                ours.run(rate, step_s), {**stack_pids(config), **bench_pid}, config.kafka.bootstrap_servers, None
            )
            our_steps.append(step)
            say(f"  -> {step.throughput:.1f}/s completed, p99 {percentile(step.latencies_ms, 0.99):.0f} ms")
            if args.mode == "max" and not step.sustained(args.slo_p99_ms):
                break
    finally:
        stop.set()
        await asyncio.gather(watcher, return_exceptions=True)
        await ours.tail.stop()
        await pool.close()
    chain = RawChain(config, int(settings["producer_linger_ms"]), int(settings["broker_commit_interval_s"] * 1000))
    raw_steps: list[Step] = []
    await chain.start()
    try:
        await chain.run(5, 2)
        for rate in rates:
            say(f"raw chain at {rate:g} messages/s for {step_s:g} s")
            pids = {**chain.pids(), "kafka": stack_pids(config).get("kafka", []), **bench_pid}
            step = await measure(chain.run(rate, step_s), pids, config.kafka.bootstrap_servers, "bench.raw.")
            raw_steps.append(step)
            say(f"  -> {step.throughput:.1f}/s completed, p99 {percentile(step.latencies_ms, 0.99):.0f} ms")
            if args.mode == "max" and not step.sustained(args.slo_p99_ms):
                break
    finally:
        await chain.stop()
    return {"settings": settings, "ours": our_steps, "raw": raw_steps}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["relay"]:
        parser = argparse.ArgumentParser(prog="python -m devtools.bench relay")
        for name in ("bootstrap", "source", "target", "group"):
            parser.add_argument(name)
        parser.add_argument("--linger-ms", type=int, default=1)
        parser.add_argument("--commit-ms", type=int, default=1000)
        a = parser.parse_args(argv[1:])
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(relay(a.bootstrap, a.source, a.target, a.group, a.linger_ms, a.commit_ms))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m devtools.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["fixed", "max"], default="fixed")
    parser.add_argument("--rate", type=float, default=50, help="payments (and raw messages) per second, fixed mode")
    parser.add_argument("--duration", type=float, default=20, help="seconds of load per system, fixed mode")
    parser.add_argument("--step-duration", type=float, default=6, help="seconds per rate step, max mode")
    parser.add_argument("--slo-p99-ms", type=float, default=1000, help="max mode: a step counts if p99 stays below")
    # Not $ENVIRONMENT: an exported ENVIRONMENT=test must not point the load at the test system.
    parser.add_argument("--environment", default="bench")
    parser.add_argument("--hot", type=int, default=5)
    parser.add_argument("--cold", type=int, default=200)
    parser.add_argument("--hot-share", type=float, default=0.5, help="share of payments on the hot wallets")
    parser.add_argument("--fail-share", type=float, default=0.1, help="share of payments over the balance")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    config = load_config(args.environment)
    ensure_stack(config)
    load_before = os.getloadavg()
    result = asyncio.run(bench(args, config))
    ours = headline(result["ours"], args.mode, args.slo_p99_ms)
    raw = headline(result["raw"], args.mode, args.slo_p99_ms)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    json_path, png_path = RESULTS / f"bench-{stamp}.json", RESULTS / f"bench-{stamp}.png"
    print()
    print(
        f"== {args.mode} mode, {config.environment}, {os.cpu_count()} cores, load average before "
        f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}"
    )
    if args.mode == "max":
        print(f"max sustained (>= 90% of offered completed in the window, p99 <= {args.slo_p99_ms:g} ms):")
        for step in (*result["ours"], *result["raw"]):
            s = step.summary()
            print(
                f"  {step.system:<5}{step.rate:>7g}/s -> {s['throughput']:>8.1f}/s  p50 {s['p50_ms']:>7.0f}  "
                f"p99 {s['p99_ms']:>7.0f} ms  {'ok' if step.sustained(args.slo_p99_ms) else 'over'}"
            )
    print(table(ours, raw))
    print()
    for key, value in result["settings"].items():
        print(f"  {key:<26}{value}")
    payload = {
        "mode": args.mode,
        "args": vars(args),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "settings": result["settings"],
        "headline": {"ours": ours.summary(), "raw": raw.summary()},
        "steps": {k: [s.summary() for s in result[k]] for k in ("ours", "raw")},
    }
    json_path.write_text(json.dumps(payload, indent=2, default=str))
    plot(png_path, result, args.mode, ours, raw)
    say(f"wrote {json_path.relative_to(localinfra.ROOT)} and {png_path.relative_to(localinfra.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: wallet payments through the public REST API, beside a chain of bare relays.

    python -m devtools.bench [--mode fixed --rate 50 --duration 20 | --mode max | --mode overload [--rate R]]
                             [--workers N] [--environment bench]

`--mode overload` offers twice the best sustained rate (`--rate`, or the best of the latest
max-mode result) for 30 s: what goes beyond capacity must be refused fast (503/429 with
Retry-After) while the accepted payments complete at the best sustained rate. `--workers N`
runs N payment-worker and N wallet-worker processes (Kafka splits the partitions).

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

from connectors.config import Config, load_config
from connectors.credentials import ADMIN
from connectors.kafka_security import KafkaAccess, kafka_access
from connectors.pg_roles import CONSOLE
from connectors.postgres import create_pool
from devtools import devctl, localinfra
from devtools.bench.measure import (
    MAX_LADDER,
    RESULTS,
    CpuWindow,
    Step,
    end_offsets_total,
    kafka_requests,
    machine_busy,
    percentile,
    say,
    stack_pids,
)
from devtools.bench.relay import RAW_KINDS, RawChain, faust_relay, relay
from devtools.bench.report import headline, plot, plot_overload, table, table_cpu
from devtools.bench.stack import OurStack, prepare_wallets

# ---------------------------------------------------------------- orchestration


def stack_settings(config: Config) -> dict[str, Any]:
    """What shapes the numbers, read from the code and configuration that run."""
    from streams.app import make_app

    conf = make_app("bench-settings", config, config.payment_worker.web_port, "memory://", ADMIN).conf
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
        "api_wait": "a wallet payment is answered from its terminal event (no view read); others read the view"
        + f", up to {config.payment_api.outcome_timeout_s:g} s",
        "projector": "getmany 1000 records, one transaction per fetch, an upsert run as one set-based statement",
    }


def ensure_workers(config: Config, workers: int) -> list[str]:
    """Processes 2..N of each worker, started beside the first; returns their names to stop."""
    supervisor = devctl.Supervisor(config)
    started = []
    for name in ("payment-worker", "wallet-worker"):
        for n in range(1, workers):
            peer = devctl.worker_peer(config, name, n)
            supervisor.start(peer)
            started.append((peer, peer.name))
    for peer, _ in started:
        supervisor.wait_healthy(peer, timeout=90)
    if started:
        settle(config, [name for _, name in started])
    return [name for _, name in started]


def settle(config: Config, names: list[str], quiet_pct: float = 20.0, limit_s: float = 300.0) -> None:
    """Wait until new members stop reading changelogs. Ready means their active partitions are
    recovered; they then read the standby replicas of the others' partitions. With a day of
    payments in the tables that took 24 s and 72 % of a core after ready, and a step measured
    during it collapsed (25/s offered: 2.3/s completed)."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        pids = stack_pids(config, tuple(names))
        window = CpuWindow.open({n: pids.get(n, []) for n in names})
        time.sleep(2.0)
        busy = {n: r["cpu_pct"] for n, r in window.close({n: pids.get(n, []) for n in names}).items()}
        if all(pct < quiet_pct for pct in busy.values()):
            say(f"new members settled after {time.monotonic() - started:.0f} s")
            return
        say(f"new members still reading their changelogs: {busy} % of a core")
    say(f"warning: new members still busy after {limit_s:.0f} s; measuring anyway")


def best_sustained_rate() -> float:
    """The best sustained rate of the latest max-mode result in results/."""
    for path in sorted(RESULTS.glob("bench-*.json"), reverse=True):
        result = json.loads(path.read_text())
        if result.get("mode") == "max":
            return float(result["headline"]["ours"]["throughput"])
    raise SystemExit('no max-mode result in results/: run `make bench ARGS="--mode max"` first, or pass --rate')


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


async def measure(
    config: Config, step_coro: Any, pids: dict[str, list[int]], access: KafkaAccess, prefix: str | None
) -> Step:
    records_before = await end_offsets_total(access, prefix)
    window, busy_before = CpuWindow.open(pids), machine_busy()
    requests_before = await asyncio.to_thread(kafka_requests, config)
    started = time.monotonic()
    step: Step = await step_coro
    step.cpu = window.close(pids)
    requests_after = await asyncio.to_thread(kafka_requests, config)
    step.kafka_requests = {
        name: n - requests_before[name] for name, n in requests_after.items() if name in requests_before
    }
    busy_after = machine_busy()
    step.machine_busy_pct = round(100 * (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1]), 1)
    step.records_per_s = round(
        (await end_offsets_total(access, prefix) - records_before) / (time.monotonic() - started), 1
    )
    return step


async def bench_ours(args: argparse.Namespace, config: Config, rates: list[float], step_s: float) -> list[Step]:
    wallets = await prepare_wallets(config, args.hot, args.cold)
    ours = OurStack(config, wallets, args.hot_share, args.fail_share)
    pool = await create_pool(config, CONSOLE, max_size=2)  # it only reads the views
    await ours.tail.start()
    stop = asyncio.Event()
    watcher = asyncio.create_task(ours.watch_projection(pool, stop))
    our_steps: list[Step] = []
    bench_pid = {"bench (load generator)": [os.getpid()]}
    try:
        await ours.run(5, 2)  # warm-up: connections, faust fetchers, the first PostgreSQL plans
        for rate in rates:
            say(f"our stack at {rate:g} payments/s for {step_s:g} s ({args.workers} process(es) per worker)")
            step = await measure(
                config,
                ours.run(rate, step_s),
                {**stack_pids(config, tuple(args.peers)), **bench_pid},
                kafka_access(config, ADMIN),  # counts every topic's records
                None,
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
    return our_steps


async def bench(args: argparse.Namespace, config: Config) -> dict[str, Any]:
    settings = stack_settings(config)
    rates = list(MAX_LADDER) if args.mode == "max" else [args.offered]
    step_s = args.step_duration if args.mode == "max" else args.duration
    our_steps = [] if args.skip_ours else await bench_ours(args, config, rates, step_s)
    if args.mode == "overload" or args.skip_raw:
        return {"settings": settings, "ours": our_steps, "raw": []}
    chain = RawChain(
        config, int(settings["producer_linger_ms"]), int(settings["broker_commit_interval_s"] * 1000), args.raw_kind
    )
    raw_steps: list[Step] = []
    bench_pid = {"bench (load generator)": [os.getpid()]}
    await chain.start()
    try:
        await chain.run(5, 2)
        for rate in rates:
            say(f"raw chain at {rate:g} messages/s for {step_s:g} s")
            pids = {**chain.pids(), "kafka": stack_pids(config).get("kafka", []), **bench_pid}
            step = await measure(config, chain.run(rate, step_s), pids, kafka_access(config, ADMIN), "bench.raw.")
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
        for name in ("source", "target", "group"):
            parser.add_argument(name)
        parser.add_argument("--linger-ms", type=int, default=1)
        parser.add_argument("--commit-ms", type=int, default=1000)
        parser.add_argument("--kind", choices=RAW_KINDS, default="aiokafka")
        parser.add_argument("--environment", default="bench")
        a = parser.parse_args(argv[1:])
        if a.kind == "faust":  # faust's worker owns the loop and the signals
            faust_relay(a.environment, a.source, a.target, a.group)
            return 0
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                relay(
                    kafka_access(load_config(a.environment), ADMIN),
                    a.source,
                    a.target,
                    a.group,
                    a.linger_ms,
                    a.commit_ms,
                )
            )
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m devtools.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["fixed", "max", "overload"], default="fixed")
    parser.add_argument(
        "--rate", type=float, help="payments per second (fixed mode, default 50); overload: the best sustained rate"
    )
    parser.add_argument("--duration", type=float, help="seconds of load (fixed 20, overload 30)")
    parser.add_argument("--workers", type=int, default=1, help="processes of each worker (scale-out)")
    parser.add_argument("--skip-raw", action="store_true", help="measure our stack only, not the raw relay chain")
    parser.add_argument("--skip-ours", action="store_true", help="measure the relay chain only (stops our services)")
    parser.add_argument(
        "--raw-kind",
        choices=RAW_KINDS,
        default="aiokafka",
        help="relays of bare aiokafka (the broker's limit) or of faust as the workers run it (faust's own cost)",
    )
    parser.add_argument("--step-duration", type=float, default=6, help="seconds per rate step, max mode")
    parser.add_argument("--slo-p99-ms", type=float, default=500, help="max mode: a step counts if p99 stays below (ms)")
    # Not $ENVIRONMENT: an exported ENVIRONMENT=test must not point the load at the test system.
    parser.add_argument("--environment", default="bench")
    parser.add_argument("--hot", type=int, default=5)
    parser.add_argument("--cold", type=int, default=200)
    parser.add_argument("--hot-share", type=float, default=0.5, help="share of payments on the hot wallets")
    parser.add_argument("--fail-share", type=float, default=0.1, help="share of payments over the balance")
    args = parser.parse_args(argv)
    try:  # asked before the run, not after it: a run's plot is the last thing it writes
        import matplotlib  # noqa: F401
    except ImportError:
        parser.error(
            "the plots need the bench extra: run `make bench ARGS=...` (it installs it) or pip install -e '.[bench]'"
        )
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if args.mode == "overload":
        args.rate = args.rate or best_sustained_rate()
        args.offered, args.duration = 2 * args.rate, args.duration or 30.0
    else:
        args.rate = args.rate or 50.0
        args.offered, args.duration = args.rate, args.duration or 20.0
    config = load_config(args.environment)
    if args.skip_ours:  # the chain needs the broker only; our idle services would share the cores
        localinfra.up(config)
        devctl.stop_services(config)
        peers = args.peers = []
    else:
        ensure_stack(config)
        peers = args.peers = ensure_workers(config, args.workers)
    load_before = os.getloadavg()
    try:
        result = asyncio.run(bench(args, config))
    finally:
        for name in peers:
            devctl.Supervisor(config).stop(name)
    if args.mode == "overload":
        return overload_report(args, config, result["ours"][0], load_before)
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


def overload_report(args: argparse.Namespace, config: Config, step: Step, load_before: tuple[float, ...]) -> int:
    s = step.summary()
    verdicts = {
        f"completed >= 90% of the best sustained {args.rate:g}/s": step.throughput >= 0.9 * args.rate,
        "refusals fast (p99 < 100 ms)": step.shed == 0 or s["shed_p99_ms"] < 100,
        "every accepted payment terminal within 10 s of the end": step.drained_s <= 10,
    }
    print()
    print(f"== overload mode, {config.environment}, {os.cpu_count()} cores, load average before {load_before[0]:.2f}")
    print(f"  offered {args.offered:g}/s for {args.duration:g} s (twice the best sustained {args.rate:g}/s)")
    print(
        f"  sent {step.sent}, accepted {step.accepted}, shed {step.shed} (p99 {s['shed_p99_ms']:.0f} ms), "
        f"completed {step.completed} ({step.throughput:.1f}/s in the window), HTTP errors {step.http_errors}"
    )
    print(
        f"  accepted: latency p50 {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms; "
        f"POST p99 {s['http_p99_ms']:.0f} ms; all terminal {step.drained_s:.1f} s after the end"
    )
    for what, ok in verdicts.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    print(table_cpu(step))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    path, png_path = RESULTS / f"bench-{stamp}.json", RESULTS / f"bench-{stamp}.png"
    payload = {"mode": "overload", "args": vars(args), "loadavg_before": load_before, "step": s, "verdicts": verdicts}
    path.write_text(json.dumps(payload, indent=2, default=str))
    plot_overload(png_path, step, args.rate)
    say(f"wrote {path.relative_to(localinfra.ROOT)} and {png_path.relative_to(localinfra.ROOT)}")
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

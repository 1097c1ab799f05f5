"""The benchmark's table and plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devtools.bench.measure import Step, percentile


def headline(steps: list[Step], mode: str, slo: float) -> Step:
    """The step to compare: the only one, or in max mode the fastest that met the target (an
    empty step when a system was not measured)."""
    if not steps:
        return Step("skipped", 0.0, 1.0)
    if mode == "fixed":
        return steps[0]
    good = [s for s in steps if s.sustained(slo)]
    return max(good, key=lambda s: s.throughput) if good else steps[0]


def table(ours: Step, raw: Step) -> str:
    o, r = ours.summary(), raw.summary()
    rows = [
        ("offered rate /s", "rate", "{:.0f}"),
        ("completed /s (in window)", "throughput", "{:.1f}"),
        ("sent / completed", None, ""),
        ("latency p50 ms", "p50_ms", "{:.1f}"),
        ("latency p95 ms", "p95_ms", "{:.1f}"),
        ("latency p99 ms", "p99_ms", "{:.1f}"),
        ("latency max ms", "max_ms", "{:.1f}"),
        ("Kafka records /s", "records_per_s", "{:.0f}"),
    ]
    lines = [f"{'':<28}{'ours':>14}{'raw chain':>14}{'ratio':>9}"]
    for label, key, fmt in rows:
        if key is None:
            lines.append(f"{label:<28}{f'{ours.sent}/{ours.completed}':>14}{f'{raw.sent}/{raw.completed}':>14}")
            continue
        ratio = o[key] / r[key] if r[key] else float("nan")
        lines.append(f"{label:<28}{fmt.format(o[key]):>14}{fmt.format(r[key]):>14}{ratio:>9.2f}")
    lines.append(f"{'failed (insufficient funds)':<28}{ours.failed:>14}")
    lines.append(f"{'HTTP errors':<28}{ours.http_errors:>14}")
    lines.append(f"{'POST response p50/p99 ms':<28}{'{:.0f}/{:.0f}'.format(o['http_p50_ms'], o['http_p99_ms']):>14}")
    lag = "{:.0f}/{:.0f}/{:.0f}".format(
        o["projection_lag_p50_ms"], o["projection_lag_p99_ms"], o["projection_lag_max_ms"]
    )
    lines.append(f"{'projection lag p50/p99/max':<28}{lag:>14}  ms (terminal event -> PostgreSQL row, 50 ms polls)")
    lines.append(f"{'machine CPU busy %':<28}{ours.machine_busy_pct:>14.0f}{raw.machine_busy_pct:>14.0f}")
    lines.append("")
    lines.append(table_cpu(ours))
    lines.append(table_cpu(raw))
    return "\n".join(lines)


def table_cpu(step: Step) -> str:
    """CPU by process: seconds, share of one core, and milliseconds per completed payment."""
    per, requests = step.cpu_per_payment(), step.requests_per_payment()
    lines = [
        f"{step.system + ' process':<30}{'CPU s':>8}{'CPU %':>8}{'ms/payment':>12}{'RSS MB':>9}"
        f"{'Kafka req/payment':>19}"
    ]
    for name, usage in sorted(step.cpu.items(), key=lambda kv: -kv[1]["cpu_s"]):
        lines.append(
            f"{name:<30}{usage['cpu_s']:>8.1f}{usage['cpu_pct']:>8.0f}{per.get(name, float('nan')):>12.2f}"
            f"{usage['rss_mb']:>9.0f}{requests.get(name, float('nan')):>19.2f}"
        )
    if per:
        lines.append(
            f"{'total (system, no load generator)':<30}{'':>16}{per['total (system)']:>12.2f}{'':>9}"
            f"{requests.get('total (system)', float('nan')):>19.2f}"
        )
    return "\n".join(lines)


def plot(path: Path, result: dict[str, Any], mode: str, ours: Step, raw: Step) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for step, colour in ((ours, "tab:blue"), (raw, "tab:orange")):
        lat = sorted(step.latencies_ms)
        if lat:
            left.plot(
                lat, [i / len(lat) for i in range(len(lat))], color=colour, label=f"{step.system} at {step.rate:g}/s"
            )
    left.set(
        xscale="log", xlabel="end-to-end latency, ms (log)", ylabel="share of payments at or below", title="Latency CDF"
    )
    left.grid(True, which="both", alpha=0.3)
    left.legend()
    if mode == "fixed":
        for step, colour in ((ours, "tab:blue"), (raw, "tab:orange")):
            bins: dict[int, list[float]] = {}
            for at, ms in zip(step.latency_at, step.latencies_ms, strict=True):
                bins.setdefault(int(at), []).append(ms)
            xs = sorted(bins)
            right.plot(xs, [percentile(bins[x], 0.5) for x in xs], color=colour, label=f"{step.system} p50")
            right.plot(
                xs, [percentile(bins[x], 0.99) for x in xs], color=colour, linestyle="--", label=f"{step.system} p99"
            )
        right.set(
            xlabel="seconds into the run (send time)",
            ylabel="latency, ms (log)",
            yscale="log",
            title="Latency over time",
        )
    else:
        for system, colour in (("ours", "tab:blue"), ("raw", "tab:orange")):
            steps = result[system]
            rates = [s.rate for s in steps]
            right.plot(
                rates, [percentile(s.latencies_ms, 0.5) for s in steps], "o-", color=colour, label=f"{system} p50"
            )
            right.plot(
                rates, [percentile(s.latencies_ms, 0.99) for s in steps], "o--", color=colour, label=f"{system} p99"
            )
        right.set(
            xlabel="offered rate /s (log)",
            ylabel="latency, ms (log)",
            xscale="log",
            yscale="log",
            title="Latency by load",
        )
    right.grid(True, which="both", alpha=0.3)
    right.legend()
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for axis in (left.xaxis, right.xaxis, right.yaxis):
        axis.set_major_formatter(ScalarFormatter())  # 100, not 10^2; minor ticks unlabelled
        axis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_overload(path: Path, step: Step, best_rate: float) -> None:
    """Left: how long accepted payments and refusals took. Right: per second of the run, the
    accepted payments (by send time) and their latency, against the best sustained rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for values, colour, label in (
        (step.latencies_ms, "tab:blue", "accepted: scheduled POST to terminal event"),
        (step.shed_ms, "tab:red", "refused: scheduled POST to 503"),
    ):
        lat = sorted(values)
        if lat:
            left.plot(lat, [i / len(lat) for i in range(len(lat))], color=colour, label=f"{label} ({len(lat)})")
    left.set(xscale="log", xlabel="ms (log)", ylabel="share at or below", title=f"Overload at {step.rate:g}/s")
    left.grid(True, which="both", alpha=0.3)
    left.legend()
    bins: dict[int, list[float]] = {}
    for at, ms in zip(step.latency_at, step.latencies_ms, strict=True):
        bins.setdefault(int(at), []).append(ms)
    xs = sorted(bins)
    right.bar(xs, [len(bins[x]) for x in xs], color="tab:blue", alpha=0.4, label="accepted per second")
    right.axhline(best_rate, color="tab:green", linestyle=":", label=f"best sustained {best_rate:g}/s")
    right.axhline(step.rate, color="tab:red", linestyle=":", label=f"offered {step.rate:g}/s")
    right.set(xlabel="seconds into the run (send time)", ylabel="payments per second", title="Accepted over time")
    latency = right.twinx()
    latency.plot(xs, [percentile(bins[x], 0.99) for x in xs], color="black", label="accepted p99, ms")
    latency.set(ylabel="accepted p99 latency, ms", ylim=(0, None))
    right.legend(loc="upper left")
    latency.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""``driftline backtest``: progress bar, summary table and PNG report around :func:`detectors.monitors.backtest.run_backtest`."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

from detectors.monitors.backtest import BacktestResult, run_backtest
from detectors.registry import build_detector
from schemas.config import MonitorConfig

__all__ = ["alerts_table", "backtest_file", "plot_report", "summary_table"]


def backtest_file(config: MonitorConfig, input_path: Path, ttl_seconds: float, console: Console) -> BacktestResult:
    """Run the backtest over a file, with a progress bar sized by bytes (shown on a terminal only)."""
    size = input_path.stat().st_size
    with Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task(f"replaying {input_path.name}", total=size)
        with input_path.open(encoding="utf-8", errors="replace") as lines:
            return run_backtest(lines, config, build_detector, ttl_seconds=ttl_seconds, batch_size=100,
                                on_progress=lambda n: progress.advance(task, n))


def summary_table(result: BacktestResult, config: MonitorConfig) -> Table:
    table = Table(title="Backtest summary")
    for column in ("model", "examples", "alerts fired", "alerts resolved", "retrain triggers", "final metric"):
        table.add_column(column, justify="left" if column == "model" else "right")
    fired = Counter((a.model, f"{a.monitor} {a.detector}") for a in result.alerts if a.status == "fired")
    resolved = Counter(a.model for a in result.alerts if a.status == "resolved")
    triggers = Counter(t.model for t in result.triggers)
    last = {p.model: p for p in result.series}
    for model, spec in config.models.items():
        detail = ", ".join(f"{n} {d}" for (m, d), n in sorted(fired.items()) if m == model) or "0"
        point = last.get(model)
        table.add_row(
            model, f"{point.n_seen:,}" if point else "0", detail, str(resolved[model]), str(triggers[model]),
            f"{spec.metric} {point.value:.4f}" if point else "-",
        )
    table.caption = (f"{result.n_lines:,} lines, {result.n_examples:,} labelled examples, "
                     f"{len(result.bad_lines):,} bad lines, {result.n_expired:,} events never joined, "
                     f"{result.n_unmonitored:,} examples of unconfigured models")
    return table


def alerts_table(result: BacktestResult, limit: int = 50) -> Table:
    """The fired alerts in the order the worker would publish them: when, what, on which version and feature."""
    fired = [a for a in result.alerts if a.status == "fired"]
    table = Table(title="Fired alerts")
    for column in ("event time", "model", "version", "segment", "monitor", "feature", "detector", "severity"):
        table.add_column(column)
    for alert in fired[:limit]:
        table.add_row(alert.event_time.strftime("%Y-%m-%d %H:%M:%S"), alert.model, alert.model_version or "-",
                      alert.segment or "-", alert.monitor, alert.feature or "-", alert.detector, alert.severity)
    if len(fired) > limit:
        table.caption = f"the first {limit} of {len(fired):,}; all are in --output"
    return table


def plot_report(result: BacktestResult, config: MonitorConfig, path: Path) -> None:
    """One panel per monitored model: the rolling metric over event time, its threshold, and alert markers."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    models = list(config.models)
    fig, axes = plt.subplots(len(models) or 1, 1, figsize=(11, 3.2 * max(len(models), 1)), squeeze=False)
    series = defaultdict(list)
    for point in result.series:
        series[point.model].append(point)
    for ax, model in zip(axes[:, 0], models):
        spec = config.models[model]
        points = series[model]
        ax.plot([p.event_time for p in points], [p.value for p in points], lw=1.2, label=f"rolling {spec.metric}")
        ax.axhline(spec.performance.threshold, color="tab:red", ls="--", lw=1, label="threshold")
        for alert in (a for a in result.alerts if a.model == model):
            colour = "tab:red" if alert.status == "fired" else "tab:green"
            ax.axvline(alert.event_time, color=colour, alpha=0.6, lw=1)
            ax.annotate(f"{alert.status} ({alert.detector})", (alert.event_time, ax.get_ylim()[1]),
                        rotation=90, va="top", ha="right", fontsize=7, color=colour)
        ax.set_title(model)
        ax.set_ylabel(spec.metric)
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

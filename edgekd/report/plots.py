"""Charts for a run: accuracy versus latency with the budget drawn in, and training curves.

PNG files written beside report.md (matplotlib's headless Agg backend; nothing needs a display).
"""

from __future__ import annotations

from pathlib import Path

from edgekd.fileio import atomic_path
from edgekd.results import Report

ACCURACY_LATENCY_PNG = "accuracy_vs_latency.png"
TRAINING_PNG = "training_curves.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_latency(report: Report, path: str | Path) -> Path | None:
    """Each model as a point (p50 latency, accuracy); budget lines; the chosen variant ringed."""
    points = [m for m in report.models if m.accuracy is not None and m.latency_ms.get("p50")]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for i, m in enumerate(sorted(points, key=lambda m: m.latency_ms["p50"])):
        teacher = m.role == "teacher"
        ax.scatter(
            m.latency_ms["p50"],
            m.accuracy,
            marker="s" if teacher else "o",
            s=60,
            color="tab:gray" if teacher else "tab:blue",
            zorder=3,
        )
        ax.annotate(
            m.name,
            (m.latency_ms["p50"], m.accuracy),
            textcoords="offset points",
            xytext=(6, 4 if i % 2 == 0 else -11),
            fontsize=8,
        )
        if m.name == report.chosen:
            ax.scatter(
                m.latency_ms["p50"],
                m.accuracy,
                s=260,
                facecolors="none",
                edgecolors="tab:green",
                linewidths=2,
                zorder=4,
                label=f"chosen: {m.name}",
            )
    budget = report.target.get("budget", {})
    if budget.get("latency_ms"):
        ax.axvline(
            budget["latency_ms"],
            color="tab:red",
            linestyle="--",
            label=f"latency budget {budget['latency_ms']} ms (p95)",
        )
    teachers = [m for m in points if m.role == "teacher"]
    if teachers and budget.get("accuracy_drop") is not None:
        floor = max(t.accuracy for t in teachers) - budget["accuracy_drop"]
        ax.axhline(
            floor,
            color="tab:orange",
            linestyle="--",
            label=f"accuracy floor (teacher - {budget['accuracy_drop']})",
        )
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency on the host, ms (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"accuracy vs latency: target {report.target.get('name')}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_training_curves(report: Report, path: str | Path) -> Path | None:
    history = report.training.get("history") or {}
    loss, val = history.get("loss") or [], history.get("val_accuracy") or []
    if not loss:
        return None
    plt = _pyplot()
    fig, ax1 = plt.subplots(figsize=(7, 4), dpi=110)
    epochs = range(1, len(loss) + 1)
    ax1.plot(epochs, loss, color="tab:blue", label="training loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss", color="tab:blue")
    if val:
        ax2 = ax1.twinx()
        ax2.plot(range(1, len(val) + 1), val, color="tab:green", label="validation accuracy")
        ax2.set_ylabel("validation accuracy", color="tab:green")
        best = history.get("best_epoch", -1)
        if 0 <= best < len(val):
            ax2.scatter([best + 1], [val[best]], color="tab:green", zorder=3)
    ax1.set_title(f"distillation ({report.training.get('method', '?')})")
    ax1.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def write_charts(report: Report, folder: str | Path) -> list[str]:
    """Write every chart that the report has data for; returns the file names written."""
    folder = Path(folder)
    written = []
    for fn, name in (
        (plot_accuracy_vs_latency, ACCURACY_LATENCY_PNG),
        (plot_training_curves, TRAINING_PNG),
    ):
        if fn(report, folder / name) is not None:
            written.append(name)
    return written

"""Figures of the notebooks (matplotlib/seaborn), each saved explicitly as a PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def save(fig, results_dir: str | Path, name: str) -> Path:
    """Save ``fig`` as ``<results_dir>/<name>.png`` (a relative directory is under the repository root)."""
    from sepo.pipeline import resolve

    path = resolve(results_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def token_heatmap(tokens: Sequence[str], rows: dict[str, Sequence[float]], title: str = ""):
    """One row per series (e.g. oracle reward, gold credit, selected) over the tokens of a response."""
    data = np.array([list(v) for v in rows.values()], dtype=float)
    scale = np.nanmax(np.abs(data), axis=1, keepdims=True)
    scale[scale == 0] = 1.0
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(tokens)), 0.8 + 0.6 * len(rows)))
    sns.heatmap(data / scale, ax=ax, cmap="RdBu_r", center=0, vmin=-1, vmax=1, cbar=False,
                annot=np.round(data, 2), fmt="", annot_kws={"size": 7}, xticklabels=list(tokens), yticklabels=list(rows))
    ax.set_xticklabels(ax.get_xticklabels(), rotation=60, ha="right", fontsize=8)
    ax.set_title(title or "per-token values (colour scaled per row)")
    return fig


def t_errorbar(values) -> tuple[float, float]:
    """Seaborn ``errorbar`` callable: the 95% Student-t interval over seeds (as in the tables and claims).

    Seaborn's own ``("ci", 95)`` bootstraps with an unseeded generator, so figures would change
    from run to run; this interval is deterministic. One value draws no bar.
    """
    from sepo.stats import t_interval

    values = list(values)
    mean, low, high = t_interval(values)
    return (mean, mean) if len(values) < 2 else (low, high)


def bars(frame, x: str, y: str, hue: str | None = None, title: str = "", ylabel: str | None = None, reference: float | None = None):
    """Mean over seeds with 95% t-intervals (:func:`t_errorbar`), one bar per ``x``."""
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * frame[x].nunique()), 3.5))
    sns.barplot(data=frame, x=x, y=y, hue=hue, ax=ax, errorbar=t_errorbar, capsize=0.1)
    if reference is not None:
        ax.axhline(reference, color="k", lw=1, ls="--")
    ax.set_title(title)
    ax.set_ylabel(ylabel or y)
    ax.tick_params(axis="x", rotation=30)
    return fig


def lines(frame, x: str, y: str, hue: str | None = None, title: str = "", reference: float | None = None, logx: bool = False):
    """Mean over seeds with 95% t-intervals (:func:`t_errorbar`) against a swept parameter."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    sns.lineplot(data=frame, x=x, y=y, hue=hue, marker="o", errorbar=t_errorbar, ax=ax)
    if reference is not None:
        ax.axhline(reference, color="k", lw=1, ls="--")
    if logx:
        ax.set_xscale("log")
    ax.set_title(title)
    return fig


def frontier(curves, title: str = "gold reward vs KL to the SFT model"):
    """Reward-vs-KL frontier per method, one line per seed's checkpoints."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    colors = dict(zip(dict.fromkeys(curves.method), sns.color_palette(n_colors=curves.method.nunique())))
    for (method, seed), part in curves.groupby(["method", "seed"], sort=False):
        part = part.sort_values("kl")
        first = seed == curves[curves.method == method].seed.min()
        ax.plot(part.kl, part.reward, marker="o", ms=3, lw=1, alpha=0.8, color=colors[method],
                label=f"{method} ({curves[curves.method == method].seed.nunique()} seeds)" if first else None)
    ax.set_xlabel("KL(policy || SFT), nats per response")
    ax.set_ylabel("gold reward")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return fig


def histograms(values: dict[str, Sequence[float]], title: str = "", xlabel: str = ""):
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, v in values.items():
        sns.histplot(np.asarray(v, dtype=float), ax=ax, label=name, stat="density", bins=40, element="step", fill=False)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.legend()
    return fig


def heatmap_grid(frame, index: str, columns: str, values: str, title: str = ""):
    table = frame.pivot_table(index=index, columns=columns, values=values, aggfunc="mean")
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    sns.heatmap(table, annot=True, fmt=".2f", cmap="viridis", ax=ax)
    ax.set_title(title)
    return fig


def benchmark_scores(frame, title: str = "benchmark scores with 95% intervals"):
    """Every benchmark's scores with their intervals: one panel per (benchmark, metric), one point per model.

    ``frame`` has the columns of :func:`sepo.evaluate.benchmark_rows` (``benchmark, metric, model, score,
    lower, upper, interval, scale``). Percent panels mark parity with the opponent (50%); the interval kind
    (bootstrap or normal) is written under each panel.
    """
    panels = list(dict.fromkeys(zip(frame["benchmark"], frame["metric"])))
    models = list(dict.fromkeys(frame["model"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 0.9 + 0.45 * len(models)), squeeze=False,
                             sharey=True)
    colours = dict(zip(models, sns.color_palette(n_colors=len(models))))
    for ax, (benchmark, metric) in zip(axes[0], panels):
        part = frame[(frame["benchmark"] == benchmark) & (frame["metric"] == metric)]
        for _, row in part.iterrows():
            y = models.index(row["model"])
            err = [[max(row["score"] - row["lower"], 0.0)], [max(row["upper"] - row["score"], 0.0)]]
            ax.errorbar(row["score"], y, xerr=err, fmt="o", color=colours[row["model"]], capsize=3)
        if (part["scale"] == "percent").all():
            ax.axvline(50.0, color="k", lw=1, ls="--")
            ax.set_xlabel("%  (" + ", ".join(sorted(set(part["interval"]))) + ")", fontsize=8)
        else:
            ax.set_xlabel(f"{part['scale'].iloc[0]}  (" + ", ".join(sorted(set(part["interval"]))) + ")", fontsize=8)
        ax.set_title(f"{benchmark}\n{metric}", fontsize=9)
        ax.set_yticks(range(len(models)), models)
        ax.set_ylim(-0.5, len(models) - 0.5)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig

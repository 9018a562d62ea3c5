"""The sweep summary picture: the target metric of every job against each swept value."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from digitlab.figures.plots.common import note


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def plot_target_vs_values(rows: list[dict[str, Any]], keys: list[str], target: str) -> Figure:
    """One panel per swept key: every job's ``target`` (y) against its value of that key (x).

    rows: dicts holding each key's value (the override string) and ``target`` (float or None).
    Numeric values are placed on a number line (log scale when they span two decades or more),
    anything else as categories in first-seen order. The best job is circled.
    """
    keys = keys or ["job"]
    fig = Figure(figsize=(4.2 * len(keys) + 0.6, 4.0), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    scored = [r for r in rows if r.get(target) is not None]
    best = max(scored, key=lambda r: r[target]) if scored else None
    for ax, key in zip(axes, keys, strict=True):
        values = [r.get(key) for r in scored]
        numbers = [n for n in map(_number, values) if n is not None]
        xs: list[float]
        if numbers and len(numbers) == len(values):
            xs = numbers
            positive = [x for x in xs if x > 0]
            if len(positive) == len(xs) and max(xs) / min(xs) >= 100:
                ax.set_xscale("log")
        else:
            labels = list(dict.fromkeys(str(v) for v in values))
            xs = [labels.index(str(v)) for v in values]
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.scatter(xs, [r[target] for r in scored], color="tab:blue", zorder=3)
        if best is not None:
            i = scored.index(best)
            ax.scatter(
                [xs[i]],
                [best[target]],
                s=160,
                facecolors="none",
                edgecolors="tab:red",
                zorder=4,
                label=f"best {best[target]:.4f}",
            )
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlabel(key)
        ax.set_ylabel(target)
        ax.grid(alpha=0.3)
    if not scored:
        note(axes[0], f"no job reported {target}")
    fig.suptitle(f"{target} of {len(scored)} of {len(rows)} jobs against the swept values")
    return fig


def plot_repeat_summary(
    table: list[dict[str, Any]], labels: list[str], metrics: tuple[str, ...]
) -> Figure:
    """One panel per metric: each configuration's mean across repeats (seeds) with ±1 std error
    bars and its min-max range as a thin line; x = the configurations (``labels``).

    table: rows with ``"<metric> mean"``, ``std``, ``min``, ``max`` (None when unmeasured) and
    ``runs``, as ``digitlab.tracking.repeats.repeat_table`` builds them.
    """
    fig = Figure(
        figsize=(max(4.5, 1.1 * len(table) + 2.0) * len(metrics), 4.2), layout="constrained"
    )
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        shown = [i for i, e in enumerate(table) if e.get(f"{metric} mean") is not None]
        xs = list(range(len(shown)))
        means, stds, lows, highs = (
            [table[i][f"{metric} {stat}"] for i in shown] for stat in ("mean", "std", "min", "max")
        )
        ax.vlines(xs, lows, highs, color="tab:gray", linewidth=1, label="min-max")
        ax.errorbar(xs, means, yerr=stds, fmt="o", color="tab:blue", capsize=5, label="mean ± std")
        ax.set_xticks(xs, [f"{labels[i]}\n(n={table[i]['runs']})" for i in shown], fontsize=8)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(loc="lower right", fontsize=8)
        if not shown:
            note(ax, f"no run reported {metric}")
    fig.suptitle("across repeats (seeds): mean ± std, min-max")
    return fig

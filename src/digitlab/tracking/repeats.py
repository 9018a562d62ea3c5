"""Statistics over a sweep's repeat dimension (``seed`` by default): mean, std, min and max of
the metrics for every other configuration, as a table and a picture with error bars."""

from __future__ import annotations

import math
import statistics
from typing import Any

import pandas as pd

from digitlab.figures.plots.sweep import plot_repeat_summary
from digitlab.tracking.tables import markdown_table

# Metrics summarised across repeats; test/acc is the headline, val/acc what a search compares.
REPEAT_METRICS = ("test/acc", "val/acc")
STATS = ("mean", "std", "min", "max")


def repeat_table(
    rows: list[dict[str, Any]], varied: list[str], repeat_keys: list[str]
) -> list[dict[str, Any]]:
    """One row per configuration (the varied keys other than the repeat keys) of the sweep's
    child ``rows``: its FINISHED runs and, per metric, ``<metric> mean``, ``std`` (sample std, 0
    for one run), ``min`` and ``max``. Empty when no repeat key varies between jobs."""
    repeats = [k for k in varied if k in repeat_keys]
    if not repeats:
        return []
    config_keys = [k for k in varied if k not in repeats]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("status") == "FINISHED":
            groups.setdefault(tuple(row.get(k) for k in config_keys), []).append(row)
    table = []
    for config, members in groups.items():
        entry: dict[str, Any] = dict(zip(config_keys, config, strict=True))
        entry["runs"] = len(members)
        entry[" + ".join(repeats)] = " ".join(sorted(str(m.get(repeats[0])) for m in members))
        for metric in REPEAT_METRICS:
            found = [m.get(metric) for m in members]
            values = [v for v in found if isinstance(v, int | float) and math.isfinite(v)]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            stats = (statistics.fmean(values), std, min(values), max(values)) if values else None
            for i, stat in enumerate(STATS):
                entry[f"{metric} {stat}"] = stats and stats[i]
        table.append(entry)
    return table


def log_repeats(client, parent_id: str, rows, varied: list[str], repeat_keys: list[str]) -> None:
    """Log ``summary/repeats.{csv,md,png}`` and the best configuration's statistics as metrics
    (``repeats/test/acc_mean`` ...) on the sweep's parent."""
    table = repeat_table(rows, varied, repeat_keys)
    if not table:
        return
    frame = pd.DataFrame(table)
    client.log_text(parent_id, frame.to_csv(index=False), "summary/repeats.csv")
    client.log_text(parent_id, markdown_table(frame), "summary/repeats.md")
    config_keys = [k for k in varied if k not in repeat_keys]
    labels = ["\n".join(f"{k}={entry[k]}" for k in config_keys) or "all" for entry in table]
    figure = plot_repeat_summary(table, labels, REPEAT_METRICS)
    client.log_figure(parent_id, figure, "summary/repeats.png")
    scored = [e for e in table if e.get("val/acc mean") is not None]
    if scored:  # the configuration a search would pick: best mean validation accuracy
        best = max(scored, key=lambda e: e["val/acc mean"])
        for metric in REPEAT_METRICS:
            for stat in STATS:
                if best.get(f"{metric} {stat}") is not None:
                    client.log_metric(
                        parent_id, f"repeats/{metric}_{stat}", float(best[f"{metric} {stat}"])
                    )

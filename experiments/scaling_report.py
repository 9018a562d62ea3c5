"""SCALING.md from scaling.py's cells: tables, a per-step cost fit and where overhead dominates."""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

import bench_report as report

PROJECT = Path(__file__).resolve().parents[1]


def medians(cells: list[dict]) -> dict[tuple, float]:
    """(model, threads, batch, pipeline) -> median samples/s over the rounds."""
    by_key = defaultdict(list)
    for c in cells:
        by_key[c["model"], c["threads"], c["batch"], c["pipeline"]].append(c["samples_per_s"])
    return {key: statistics.median(values) for key, values in by_key.items()}


def extra_us(med: dict, model: str, threads: int, batch: int) -> float:
    """What digitlab adds to one optimizer step over the plain loop, in microseconds."""
    step = {p: batch / med[model, threads, batch, p] for p in ("digitlab", "plain")}
    return (step["digitlab"] - step["plain"]) * 1e6


def step_fit(med: dict, model: str, threads: int, batches: list[int]) -> tuple[float, float]:
    """Least squares of the plain loop's step time against batch size: (µs per step, µs per
    sample). The first is the step's fixed cost (Python, operator dispatch, optimizer), the
    second its compute per image."""
    xs = batches
    ys = [b / med[model, threads, b, "plain"] * 1e6 for b in batches]
    if len(xs) < 2:
        return float("nan"), ys[0] / xs[0]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    return mean_y - slope * mean_x, slope


def grid(med, models, threads, batches, cell) -> str:
    rows = [(m, t, *(cell(m, t, b) for b in batches)) for m in models for t in threads]
    return report.table(["model", "threads", *(f"batch {b}" for b in batches)], rows, right_from=1)


def cell_name(key: tuple) -> str:
    return f"{key[0]}, {key[1]} thread(s), batch {key[2]}"


def reading(med, models, threads, batches) -> list[str]:
    """Statements computed from the medians: where the framework's cost shows, and from which
    batch size on compute outweighs the fixed cost of a step."""
    keys = [(m, t, b) for m in models for t in threads for b in batches]
    ratio = {k: med[(*k, "digitlab")] / med[(*k, "plain")] for k in keys}
    low, high = min(ratio, key=ratio.get), max(ratio, key=ratio.get)
    extras = [extra_us(med, *k) for k in keys]
    losing = [k for k in keys if ratio[k] < 0.9]
    lines = [
        f"- **Framework cost.** digitlab / plain runs from {ratio[low]:.2f} ({cell_name(low)}) to "
        f"{ratio[high]:.2f} ({cell_name(high)}), median {statistics.median(ratio.values()):.2f}; "
        f"digitlab adds a median {statistics.median(extras):+.0f} µs per optimizer step. "
        + (
            f"Cells losing more than 10 % to Lightning and digitlab: "
            f"{'; '.join(cell_name(k) for k in losing)}."
            if losing
            else "No cell loses more than 10 % to Lightning and digitlab: with 20 optimizer "
            "steps per "
            "Lightning step its per-step cost is spread thin, and compute or PyTorch's own "
            "per-step cost dominates everywhere."
        ),
    ]
    for t in threads:
        parts = []
        for m in models:
            fixed, per_sample = step_fit(med, m, t, batches)
            if fixed > 0 and per_sample > 0:
                parts.append(
                    f"{m} {fixed:.0f} µs + {per_sample:.1f} µs/image (even at batch "
                    f"{fixed / per_sample:.0f})"
                )
            else:
                # Step time growing faster than the batch: per-image compute outweighs any
                # fixed cost at every batch measured.
                parts.append(
                    f"{m}: no positive fixed cost in the fit (step time grows faster "
                    "than the batch: compute dominates throughout)"
                )
        lines.append(
            f"- **Fixed cost vs. compute, plain loop, {t} thread(s)** (step time fitted as fixed + "
            f"per image × batch): {'; '.join(parts)}. Below the even batch a step's fixed cost "
            "(Python, operator dispatch, the optimizer's per-tensor work) dominates, above it the "
            "images' compute does."
        )
    if len(threads) > 1:
        lo, hi = min(threads), max(threads)
        gains = [
            f"{m} {med[m, hi, batches[0], 'plain'] / med[m, lo, batches[0], 'plain']:.2f}× "
            f"at batch {batches[0]}, "
            f"{med[m, hi, batches[-1], 'plain'] / med[m, lo, batches[-1], 'plain']:.2f}× "
            f"at batch {batches[-1]}"
            for m in models
        ]
        lines.append(
            f"- **Threads** ({hi} vs {lo}, plain loop): {'; '.join(gains)}. A second "
            "core can only speed up the compute part of a step (the intra-op work); the "
            "fixed per-step cost runs on one."
        )
    return lines


def markdown(args, argv: list[str], cells: list[dict], started: dict) -> str:
    med = medians(cells)
    models, threads, batches = args.models, args.threads, sorted(args.batches)
    smoke = (
        "**SMOKE RUN (`--window` < 1): proves the script runs; these figures are not results.**\n\n"
        if args.window < 1
        else ""
    )
    steps = {(c["model"], c["batch"]): c["steps"] for c in cells}
    windows = "; ".join(f"{m} " + ", ".join(str(steps[m, b]) for b in batches) for m in models)
    digitlab = grid(
        med, models, threads, batches, lambda m, t, b: f"{med[m, t, b, 'digitlab']:,.0f}"
    )
    plain = grid(med, models, threads, batches, lambda m, t, b: f"{med[m, t, b, 'plain']:,.0f}")
    ratio = grid(
        med,
        models,
        threads,
        batches,
        lambda m, t, b: (
            f"{med[m, t, b, 'digitlab'] / med[m, t, b, 'plain']:.2f} "
            f"({extra_us(med, m, t, b):+.0f} µs)"
        ),
    )
    return f"""# Scaling: training samples/s by model, batch size and threads

{smoke}Command (from the repository root), date and machine:

    {" ".join([".venv/bin/python experiments/scaling.py", *argv])}

- date: {started["date"]} to {report.now()}, {started["seconds"] / 60:.1f} min in all; load
  average {started["load"]:.2f} at the start, {started["load_end"]:.2f} at the end
- machine: {report.machine()}
- digitlab {report.git_commit(PROJECT)}: {report.versions(sys.executable, ["torch", "lightning"])}

What is measured (see `experiments/scaling.py`): per cell, digitlab's own training path
(`train(cfg)`, Lightning, `data.steps_per_call=20`, MLflow) and a plain PyTorch loop on the same
tensors, network, batch, optimizer (SGD lr 0.1) and number of optimizer steps; samples/s over the
training batches only, median of {args.repeats} round(s). Optimizer steps per window, by batch
{", ".join(map(str, batches))}: {windows}. One process per thread count.

## digitlab, training samples/s

{digitlab}

## Plain PyTorch loop, training samples/s

{plain}

## digitlab / plain (what digitlab adds per optimizer step)

{ratio}

## Where overhead dominates and where compute does

{chr(10).join(reading(med, models, threads, batches))}
"""

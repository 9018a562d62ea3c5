"""Run every seed preset on the real data and write experiments/PRESETS.md.

    uv run python experiments/presets.py [--root /path/to/data] [--only NAME ...] [-- OVERRIDE ...]

Each preset trains as ``python -m digitlab experiment=<name>`` in a subprocess (one MLflow run
each, experiment ``presets``). The table is rebuilt from the store every time, from the latest
finished run of each preset, so ``--only best`` (or two runners at once) updates rows in place;
``--table`` rebuilds it without training.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
TABLE = HERE / "PRESETS.md"

# preset -> what the seed tutorial reports (its headline figure, as published).
HEADLINES = {
    "mxnet_mlp": "MXNet tutorial MLP: > 96 % (MNIST test)",
    "mxnet_lenet": "MXNet tutorial LeNet: > 98 % (MNIST test)",
    "mxnet_jl_kaggle": "MXNet.jl notebook: 0.97257 (Kaggle public leaderboard)",
    "flux_mlp": "Flux model zoo MLP: ≈ 92 % (MNIST test)",
    "mindspore_lenet5": "MindSpore LeNet-5 lab: > 95 % (MNIST test)",
    "best": "target ≥ 99.5 % (MNIST test)",
}


def machine() -> str:
    gpu = "NVIDIA GPU" if shutil.which("nvidia-smi") else "no GPU"
    return f"{os.cpu_count()}-core {platform.machine()} CPU VM, {gpu}"


def run_preset(name: str, root: str, overrides: list[str]) -> None:
    """Train one preset in a subprocess, its output kept in experiments/logs/<name>.log."""
    command = [
        sys.executable,
        "-m",
        "digitlab",
        f"experiment={name}",
        f"data.root={root}",
        "logger.experiment_name=presets",
        "trainer.enable_progress_bar=false",
        *overrides,
    ]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    log = done.stdout + done.stderr
    (HERE / "logs").mkdir(exist_ok=True)
    (HERE / "logs" / f"{name}.log").write_text(log)
    found = re.search(r"MLflow run ([0-9a-f]{32})", done.stdout)
    status = (
        f"run {found.group(1)}" if found else f"failed: {(log.strip().splitlines() or ['?'])[-1]}"
    )
    print(f"{name}: {status} after {seconds / 60:.1f} min", flush=True)


def latest_runs(tracking_uri: str) -> dict[str, object]:
    """preset -> its latest FINISHED run in experiment ``presets``, else its latest run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("presets")
    if experiment is None:
        return {}
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    latest: dict[str, object] = {}
    for run in sorted(runs, key=lambda r: r.info.status != "FINISHED"):  # finished ones first
        latest.setdefault(run.data.tags.get("choice.experiment"), run)
    return latest


def write_table(results: dict[str, object]) -> None:
    lines = [
        "# Seed presets on the real data",
        "",
        "Produced by `uv run python experiments/presets.py --root /work/shared/data` "
        "(each row: `digitlab experiment=<preset>`, one MLflow run in experiment `presets`).",
        '"Ours" is accuracy on MNIST\'s official 10 000 test images (for `mxnet_jl_kaggle`: on the '
        "20 % holdout of Kaggle's train.csv, since Kaggle's test.csv has no labels), measured with "
        "the checkpoint of the best validation epoch. The MNIST presets hold 5 000 of the 60 000 "
        "training images out for validation; the tutorials train on all 60 000 and watch the "
        "test set.",
        "",
        "Machine: the one this table was written on, where every run was made. "
        "Wall time is the MLflow run's start to end (data loading, training, testing; not the few "
        "seconds of Python start-up). Other jobs may have shared the machine's cores during a run, "
        "so wall times are upper bounds; the accuracies do not depend on load. `commit` is the "
        "code the run trained with (its MLflow tag `mlflow.source.git.commit`).",
        "",
        "| preset | seed's headline | ours (test acc) | val acc | wall time | machine | date | commit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in HEADLINES:
        run = results.get(name)
        if run is None:
            continue
        metrics = run.data.metrics
        end = run.info.end_time or dt.datetime.now(dt.UTC).timestamp() * 1000
        minutes = (end - run.info.start_time) / 60_000
        date = dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.UTC).strftime(
            "%Y-%m-%d %H:%M UTC"
        )
        if run.info.status == "FINISHED":
            ours, wall = f"{metrics['test/acc']:.2%}", f"{minutes:.1f} min"
        else:  # say how far an unfinished run got rather than leave the preset out
            epochs = int(metrics.get("epoch", -1)) + 1 if "val/acc" in metrics else 0
            planned = run.data.params.get("trainer.max_epochs", "?")
            ours = f"not finished ({run.info.status} after {epochs} of {planned} epochs)"
            wall = f"{minutes:.1f} min ({'so far' if run.info.status == 'RUNNING' else 'stopped'})"
        val = f"{metrics['val/acc']:.2%}" if "val/acc" in metrics else "–"
        commit = run.data.tags.get("mlflow.source.git.commit", "")[:7] or "–"
        lines.append(
            f"| `{name}` | {HEADLINES[name]} | {ours} | {val} | {wall} | {machine()} | {date} "
            f"| {commit} |"
        )
    TABLE.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root",
        default=os.environ.get("DIGITLAB_DATA", str(PROJECT.parent / "shared" / "data")),
        help="data root holding MNIST/raw and digit-recognizer/",
    )
    parser.add_argument("--only", nargs="+", choices=list(HEADLINES), help="run only these presets")
    parser.add_argument(
        "--table", action="store_true", help="only rebuild the table from the store"
    )
    parser.add_argument(
        "--tracking-uri",
        default=f"sqlite:///{PROJECT / 'mlruns' / 'mlflow.db'}",
        help="the MLflow store the presets log to",
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every preset")
    args = parser.parse_args()
    for name in [] if args.table else args.only or list(HEADLINES):
        run_preset(name, args.root, [f"logger.tracking_uri={args.tracking_uri}", *args.overrides])
        write_table(latest_runs(args.tracking_uri))
    write_table(latest_runs(args.tracking_uri))
    print(f"wrote {TABLE}")


if __name__ == "__main__":
    main()

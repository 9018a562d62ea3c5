"""The same Optuna search with and without pruning: wall time and best ``val/acc``.

    uv run python experiments/search_pruning.py --root ../shared/data [--trials 24] [-- OVERRIDE]

Each search is one ``python -m digitlab -m experiment=search`` command over LeNet's learning
rate, width (conv filters, hidden units) and batch size (momentum and weight decay fixed), with
the same TPE sampler seed, into a fresh store of its own; one uses the median pruner, the other
``hydra/sweeper/pruner=none``. Wall time is the whole command, start to exit; the best value,
the trial counts and the pruned count are read from the stored study afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
# Short epochs so that 2 x 24 trials fit in minutes on a 2-core CPU; enough epochs for a pruner
# to have something to stop. Every trial still validates on 5 000 real images and tests on t10k.
SETTINGS = [
    "trainer.max_epochs=4",
    "trainer.limit_train_batches=3",  # 3 Lightning steps = 60 optimizer steps per epoch
    # fixed on the command line, so out of the preset's space: lr, width and batch size remain
    "optimizer.momentum=0.9",
    "optimizer.weight_decay=0.0",
    "figures.enabled=false",
    "logger.log_checkpoint=false",
    "trainer.enable_progress_bar=false",
    "hydra.sweeper.n_jobs=1",
]
PRUNERS = {
    "median": ["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=4"],
    "none": ["hydra/sweeper/pruner=none"],
}


def _children_cpu() -> float:
    """CPU seconds (user + system) of finished child processes: on a machine shared with other
    jobs this grows less with their load than wall time does (but still grows: threads that
    spin-wait for a core count as busy)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def search(
    root: str, folder: Path, pruner: str, trials: int, extra: list[str], warmup: int
) -> dict:
    import optuna

    store = folder / pruner
    command = [
        sys.executable,
        "-m",
        "digitlab",
        "-m",
        "experiment=search",
        f"data.root={root}",
        f"logger.tracking_uri=sqlite:///{store / 'mlflow.db'}",
        f"logger.artifact_location={store / 'artifacts'}",
        f"hydra.sweep.dir={store / 'sweep'}",
        f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweeper.study_name=bench-{pruner}",
        *SETTINGS,
        *PRUNERS[pruner],
        *extra,
        *([f"hydra.sweeper.pruner.n_warmup_steps={warmup}"] if pruner == "median" else []),
    ]
    started, cpu_before = time.perf_counter(), _children_cpu()
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - started, _children_cpu() - cpu_before
    if done.returncode != 0:
        sys.exit(f"{pruner}: exit {done.returncode}\n{done.stderr[-3000:]}")
    study = optuna.load_study(
        study_name=f"bench-{pruner}", storage=f"sqlite:///{store / 'optuna.db'}"
    )
    states = [t.state.name for t in study.trials]
    return {
        "pruner": pruner,
        "wall_s": wall,
        "cpu_s": cpu,
        "best": study.best_value,
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder holding MNIST/raw/")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="epochs (0-based steps) before the median pruner may stop a trial",
    )
    parser.add_argument(
        "--first",
        choices=list(PRUNERS),
        default="median",
        help="which search runs first (alternate it to balance drifting load)",
    )
    parser.add_argument("overrides", nargs="*", help="more digitlab overrides for both searches")
    args = parser.parse_args()
    print(
        f"# {platform.machine()} {platform.system()}, python {platform.python_version()}, "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )
    order = sorted(PRUNERS, key=lambda p: p != args.first)
    with tempfile.TemporaryDirectory(prefix="digitlab-search-") as tmp:
        rows = {
            p: search(args.root, Path(tmp), p, args.trials, args.overrides, args.warmup)
            for p in order
        }
        print(f"# load average after: {os.getloadavg()[0]:.2f}")
    print("| pruner | trials (complete / pruned) | wall time | CPU time | best val/acc |")
    print("|---|---|---|---|---|")
    for r in rows.values():
        print(
            f"| {r['pruner']} | {r['complete']} / {r['pruned']} | {r['wall_s'] / 60:.1f} min "
            f"| {r['cpu_s'] / 60:.1f} min | {r['best'] * 100:.2f}% |"
        )
    median, none = rows["median"], rows["none"]
    print(
        f"\nratio median/none: wall {median['wall_s'] / none['wall_s']:.2f}, "
        f"CPU {median['cpu_s'] / none['cpu_s']:.2f}; "
        f"best val/acc difference: {(median['best'] - none['best']) * 100:+.2f} points"
    )


if __name__ == "__main__":
    main()

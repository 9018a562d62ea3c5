"""Time to accuracy: the whole ``digitlab experiment=fast`` command, start to exit, several times.

    uv run python experiments/time_to_accuracy.py --root ../shared/data \
        [--seeds 1 2 3 4 5] [-- OVERRIDE ...]

Each repeat (one per seed) is a fresh ``python -m digitlab`` process (imports, data decoding,
MLflow run, training,
test pass, checkpoint upload: everything a user waits for), timed from before the process starts
to after it exits. One untimed run first creates the MLflow store (its schema migrations are a
one-off cost) and warms the file cache, as a user's second run would find them. Prints each
repeat's wall time, test accuracy and time to the first training step, then medians and spread.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def run_once(root: str, store: Path, overrides: list[str]) -> dict[str, float]:
    command = [
        sys.executable,
        "-m",
        "digitlab",
        "experiment=fast",
        f"data.root={root}",
        f"logger.tracking_uri=sqlite:///{store / 'mlflow.db'}",
        f"logger.artifact_location={store / 'artifacts'}",
        f"hydra.run.dir={store / 'outputs' / str(time.time_ns())}",
        "trainer.enable_progress_bar=false",
        *overrides,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    log = done.stdout + done.stderr
    if done.returncode != 0:
        sys.exit(f"run failed:\n{log[-3000:]}")
    acc = re.search(r"test/acc (\d\.\d+)", log)
    first = re.search(r"first training step ([\d.]+) s after the command started", log)
    return {
        "wall_s": wall,
        "test_acc": float(acc.group(1)) if acc else float("nan"),
        "first_step_s": float(first.group(1)) if first else float("nan"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=os.environ.get("DIGITLAB_DATA", "data"))
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[1, 2, 3, 4, 5],
        help="one timed repeat per seed: every seed must reach the accuracy",
    )
    p.add_argument("overrides", nargs="*", help="extra config overrides, e.g. trainer.max_epochs=3")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="digitlab-tta-") as tmp:
        store = Path(tmp)
        run_once(args.root, store, args.overrides)  # creates the store; untimed
        results = []
        for seed in args.seeds:
            r = run_once(args.root, store, [f"seed={seed}", *args.overrides])
            r["load"] = os.getloadavg()[0]
            results.append(r)
            print(
                f"seed {seed}: wall {r['wall_s']:.1f} s  test/acc {r['test_acc']:.4f}  "
                f"first step after {r['first_step_s']:.1f} s  load average {r['load']:.2f}",
                flush=True,
            )
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()} "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    for key in ("wall_s", "test_acc", "first_step_s"):
        values = [r[key] for r in results]
        print(
            f"{key}: median {statistics.median(values):.4g}  min {min(values):.4g}  "
            f"max {max(values):.4g}"
        )


if __name__ == "__main__":
    main()

"""Every measurement of the GPU recipe (issue 30) in one go, printed as one markdown table.

    bash .dev/run.sh bash experiments/gpu_check.sh          # on the GPU machine (< 5 minutes)
    GPU_CHECK_CPU=1 bash experiments/gpu_check.sh            # the same logic on a CPU, tiny runs

Rows, each a fresh ``python -m digitlab`` process timed from start to exit (one untimed run first
creates the MLflow store and compiles the bytecode, as a user's second command finds them):
  fast          ``experiment=fast trainer.accelerator=gpu``, the issue's starting point;
  levers 0-4    ``experiment=gpu`` with every lever off, then fused Adam, bf16 autocast,
                channels_last and CUDA graphs added one at a time (4 = the recipe), seed 1;
  recipe s1-s5  the recipe over seeds 1-5, then their medians (and the lowest accuracy);
  bench         ``bench_throughput.py --accelerator gpu`` at batch 256 (plain SGD loop) and with
                the recipe's tricks (``--tricks``), digitlab against a plain loop in one process.
Columns: MNIST test accuracy; training seconds (``train/seconds``: the epochs' training batches,
validation excluded, as the run measured them); training images/s (last epoch); seconds from the
command's start to the first training step; the whole command; the CUDA-graph capture
(``train/graph_capture_s``, before the first step); the GPU's busy share while it trained
(``nvidia-smi --query-gpu=utilization.gpu``, what ``dmon -s u`` calls sm, sampled every 50 ms
between the first step and the end of training); bench rows: b/a.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
SEEDS = (1, 2, 3, 4, 5)
# The levers of experiment=gpu, added one at a time to the same recipe.
ALL_OFF = [
    "optimizer.fused=false",
    "trainer.precision=32-true",
    "channels_last=false",
    "cuda_graphs=false",
]
LADDER = [
    ("levers 0: experiment=gpu, all off", ALL_OFF),
    ("levers 1: + fused Adam", ALL_OFF[1:]),
    ("levers 2: + bf16 autocast", ALL_OFF[2:]),
    ("levers 3: + channels_last", ALL_OFF[3:]),
    ("levers 4: + CUDA graphs (the recipe)", []),
]
# On a CPU (GPU_CHECK_CPU=1): the GPU-only levers off and runs cut to a few steps.
CPU = [
    "trainer.accelerator=cpu",
    "cuda_graphs=false",
    "trainer.precision=32-true",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.steps_per_call=2",
    "data.val_size=40",  # also fits the tests' 240-image data set
]
COLUMNS = (
    "measurement",
    "test/acc %",
    "training s",
    "img/s",
    "first step s",
    "command s",
    "capture s",
    "GPU busy %",
    "b/a",
)


def digitlab_command(overrides: list[str], store: Path, root: str, name: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "digitlab",
        *overrides,
        f"data.root={root}",
        f"logger.tracking_uri=sqlite:///{store / 'mlflow.db'}",
        f"logger.artifact_location={store / 'artifacts'}",
        f"logger.run_name={slug(name)}",
        f"hydra.run.dir={store / 'outputs' / slug(name)}",
        "trainer.enable_progress_bar=false",
        "+callbacks.throughput.log_seconds=true",
    ]


class GpuBusy:
    """``nvidia-smi`` sampling the GPU's busy share every 50 ms, with host timestamps."""

    def __init__(self, enabled: bool) -> None:
        self.samples: list[tuple[float, float]] = []
        self.process = None
        if enabled and shutil.which("nvidia-smi"):
            self.process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
                + ["-lms", "50"],
                stdout=subprocess.PIPE,
                text=True,
            )
            os.set_blocking(self.process.stdout.fileno(), False)

    def read(self) -> None:
        if self.process is None:
            return
        for line in self.process.stdout.read().splitlines() if self.process.stdout else []:
            if line.strip().isdigit():
                self.samples.append((time.time(), float(line)))

    def mean(self, start: float, end: float) -> float | None:
        """Mean busy % of the samples between ``start`` and ``end`` (Unix time), if any."""
        self.read()
        inside = [v for t, v in self.samples if start <= t <= end]
        return statistics.fmean(inside) if inside else None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()


def slug(name: str) -> str:
    """A run name that Hydra's command line takes as one plain value."""
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


def measure(command: list[str], store: Path, name: str, busy: GpuBusy) -> dict:
    """Run one command; its numbers from its MLflow run (found by ``name``) and the clock."""
    started = time.time()
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True)
    wall = time.time() - started
    busy.read()
    if done.returncode != 0:
        sys.exit(f"{name} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"attributes.run_name = '{slug(name)}'",
    )
    m = run.data.metrics
    first = m.get("time_to_first_step_s")
    seconds = m.get("train/seconds")
    gpu = None
    if first is not None and seconds is not None:
        # from the first step to the end of training: capture, epochs and their validation
        gpu = busy.mean(started + first, started + first + seconds + 0.25)
    return {
        "measurement": name,
        "test/acc %": 100 * m["test/acc"] if "test/acc" in m else None,
        "training s": seconds,
        "img/s": m.get("train/samples_per_sec"),
        "first step s": first,
        "command s": wall,
        "capture s": m.get("train/graph_capture_s"),
        "GPU busy %": gpu,
    }


def medians(rows: list[dict], name: str) -> list[dict]:
    """One row of medians over ``rows``, and one with the lowest test accuracy."""
    out = {"measurement": name}
    for column in COLUMNS[1:]:
        values = [r[column] for r in rows if r.get(column) is not None]
        out[column] = statistics.median(values) if values else None
    accuracies = [r["test/acc %"] for r in rows if r.get("test/acc %") is not None]
    lowest = {"measurement": f"lowest test/acc of {len(rows)} seeds"}
    lowest["test/acc %"] = min(accuracies) if accuracies else None
    return [out, lowest]


def table(rows: list[dict]) -> str:
    """The markdown table of ``rows`` (dicts keyed by COLUMNS; None or absent: blank)."""

    def cell(column: str, value) -> str:
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if column == "img/s":
            return f"{value:,.0f}"
        if column in ("test/acc %", "GPU busy %"):
            return f"{value:.2f}" if column == "test/acc %" else f"{value:.0f}"
        return f"{value:.2f}" if column in ("b/a", "training s", "capture s") else f"{value:.1f}"

    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    for row in rows:
        lines.append("| " + " | ".join(cell(c, row.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines)


def bench(cpu: bool, root: str, batch: int, tricks: bool, work: Path) -> dict:
    """``bench_throughput.py`` for the recipe's network, one model, in its own process."""
    batch = 8 if cpu else batch  # the tiny data set holds 200 training images
    out = work / f"bench-{batch}-{int(tricks)}.json"
    recipe_net = ["model.channels=[24,32]", "model.hidden=[256]", "model.activation=relu"]
    command = [
        sys.executable,
        str(PROJECT / "experiments" / "bench_throughput.py"),
        "--models",
        "lenet",
        "--batch-size",
        str(batch),
        "--data-root",
        root,
        "--json",
        str(out),
        *[f"--override={o}" for o in recipe_net],
    ]
    if tricks:
        command.append("--tricks")
    if cpu:
        command += ["--accelerator", "cpu", "--steps", "4", "--repeats", "1", "--warmup", "0"]
        command += ["--val-size", "40", "--override=data.steps_per_call=2"]
    else:  # two of the recipe's chunks per measurement
        command += ["--accelerator", "gpu", "--steps", "214", "--repeats", "3"]
        command += ["--override=data.steps_per_call=107"]
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    med = json.loads(out.read_text())["medians"]["lenet"]
    what = "recipe's tricks" if tricks else "plain SGD"
    return {
        "measurement": f"bench batch {batch}, {what}: plain {med['plain']:,.0f} img/s",
        "img/s": med["digitlab"],
        "b/a": med["digitlab"] / med["plain"],
    }


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu", action="store_true", default=os.environ.get("GPU_CHECK_CPU") == "1")
    p.add_argument("--root", default=os.environ.get("DIGITLAB_DATA", "data"))
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--parts", nargs="+", default=["fast", "levers", "recipe", "bench"])
    p.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    args = p.parse_args(argv)
    extra = (CPU if args.cpu else []) + args.extra
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    busy = GpuBusy(enabled=not args.cpu)
    rows: list[dict] = []
    started = time.time()

    def run(name: str, overrides: list[str]) -> dict:
        row = measure(digitlab_command(overrides + extra, work, args.root, name), work, name, busy)
        print(f"{name}: {json.dumps(row)}", flush=True)
        return row

    try:
        if not args.cpu:  # the store's migrations and the bytecode, once, untimed
            run("warm-up", ["experiment=gpu"])
        if "fast" in args.parts:
            fast = ["experiment=fast", "trainer.accelerator=gpu"]
            rows.append(run("fast, seed 1", fast + ["seed=1"]))
        if "levers" in args.parts:
            for name, overrides in LADDER:
                rows.append(run(name, ["experiment=gpu", "seed=1", *overrides]))
        if "recipe" in args.parts:
            seeds = [run(f"recipe, seed {s}", ["experiment=gpu", f"seed={s}"]) for s in args.seeds]
            rows += seeds + medians(seeds, f"recipe, median of {len(seeds)} seeds")
        if "bench" in args.parts:
            rows.append(bench(args.cpu, args.root, 256, False, work))
            rows.append(bench(args.cpu, args.root, 256, True, work))
    finally:
        busy.stop()
        shutil.rmtree(work, ignore_errors=True)
    import platform

    machine = "CPU (GPU_CHECK_CPU=1: tiny runs)" if args.cpu else gpu_name()
    heading = (
        f"gpu_check {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine}, "
        f"{platform.machine()}, {time.time() - started:.0f} s in all"
    )
    text = heading + "\n\n" + table(rows)
    print("\n" + text, flush=True)
    return text


def gpu_name() -> str:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        return done.stdout.strip() or "no nvidia-smi answer"
    except OSError:
        return "no nvidia-smi"


if __name__ == "__main__":
    main()

"""Scaling table: training samples/s of every model at batch 32, 100, 256, 1024, on 1 and 2 threads.

    DIGITLAB_DATA=../shared/data .venv/bin/python experiments/scaling.py    # writes SCALING.md
    ... --repeats 1 --window 0.05 --models mlp lenet5 --batches 32 1024     # smoke test, marked

Each thread count runs in its own process, ``OMP_NUM_THREADS`` and ``torch.set_num_threads`` set
before any work (one process per thread count rather than per cell: importing Lightning alone
takes seconds). The process decodes MNIST once; each round then visits every (model, batch) cell
and measures, alternating which goes first:

  plain     bench_throughput.py's plain loop over digitlab's own split tensors (randperm, index,
            forward, cross-entropy, zero_grad, backward, SGD step);
  digitlab  ``digitlab.training.run.train(cfg)``: Lightning Trainer, the data module (default
            ``data.steps_per_call=20``), the LightningModule, an MLflow run in a temporary store;
            its own ``train/samples_per_sec`` (training batches only).

Same network, batch size, optimizer (SGD lr 0.1, bench_throughput.py's) and optimizer steps: a
window of about ``WINDOW[model] x --window`` samples, rounded up to whole Lightning steps (20
optimizer steps) and capped at one epoch. Medians over rounds. Before the rounds, one untimed
run of each pipeline takes the process's one-off costs (the MLflow store, lazy imports). What
lies outside the timed window (validation, checkpoints, the MLflow run) is kept short: one
validation batch, no test pass, no pictures, no uploads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import bench_report as report
import scaling_report

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
MODELS = ("mlp", "lenet_small", "lenet", "lenet5")
BATCHES = (32, 100, 256, 1024)
# Samples per timed window, sized from RESULTS.md's rates to take about a second at batch 100.
WINDOW = {"mlp": 60_000, "lenet_small": 10_000, "lenet": 5_000, "lenet5": 12_000}
STEPS_PER_CALL = 20  # conf/data/mnist.yaml's data.steps_per_call, digitlab's default
TRAIN_SIZE = 55_000  # 60 000 MNIST training images less data.val_size=5000
PREFIX = "CELL "


def optimizer_steps(model: str, batch: int, window: float) -> int:
    """Steps in one window: whole Lightning steps of ``STEPS_PER_CALL``, at most one epoch."""
    calls = math.ceil(WINDOW[model] * window / (batch * STEPS_PER_CALL))
    return min(calls * STEPS_PER_CALL, math.ceil(TRAIN_SIZE / batch))


def run_plain(cfg, data, steps: int, seed: int) -> float:
    import torch
    from bench_throughput import train_steps
    from hydra.utils import instantiate

    from digitlab.data.datamodule import prepare
    from digitlab.training.build import build_datamodule

    images, labels = build_datamodule(cfg, loaded=data).split()["train"]
    d, device = cfg.data, torch.device("cpu")
    x = prepare(images, device, d.scale, d.mean, d.std, cfg.model.input_size)
    torch.manual_seed(seed)
    net = instantiate(cfg.model)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    batches = ((x[i], labels[i]) for i in order.split(d.batch_size))
    samples, seconds = train_steps(net, batches, steps, device)
    return samples / seconds


def run_digitlab(cfg, data) -> float:
    from digitlab.training.run import train

    result = train(cfg, choices={"model": "scaling"}, data=data)
    return result["metrics"]["train/samples_per_sec"]


def cell_config(model: str, batch: int, steps: int, seed: int, root: Path, store: Path):
    """bench_throughput.py's config for one cell, the window and the short extras on top."""
    from bench_throughput import compose

    settings = SimpleNamespace(
        data_root=root,
        val_size=60_000 - TRAIN_SIZE,
        batch_size=batch,
        accelerator="cpu",
        tracking_uri=None,
    )
    return compose(
        model,
        settings,
        store,
        [
            f"seed={seed}",
            "figures=off",
            "logger.log_model=false",
            "trainer.enable_progress_bar=false",
            f"trainer.limit_train_batches={math.ceil(steps / STEPS_PER_CALL)}",
        ],
    )


def worker(args: argparse.Namespace) -> None:
    """One thread count: every cell, ``--repeats`` rounds; one ``CELL {json}`` line per figure."""
    import logging

    import torch

    from digitlab.data.sources import load_mnist

    torch.set_num_threads(args.threads)
    import lightning  # noqa: F401  (sets its loggers' levels on import; ours must come after)

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    data = load_mnist(args.root, download=False)  # decoded once, outside every timed window
    with tempfile.TemporaryDirectory(prefix="digitlab-scaling-") as tmp:
        # Untimed: the first train() creates the store and imports lazily, the first optimizer
        # step imports too; neither belongs to a cell.
        cfg = cell_config("mlp", 100, STEPS_PER_CALL, 0, args.root, Path(tmp) / "mlruns")
        run_plain(cfg, data, STEPS_PER_CALL, 0)
        run_digitlab(cfg, data)
        for round_ in range(args.repeats):
            seed = 1000 + round_
            for model in args.models:
                for batch in args.batches:
                    steps = optimizer_steps(model, batch, args.window)
                    cfg = cell_config(model, batch, steps, seed, args.root, Path(tmp) / "mlruns")
                    # Alternate which goes first: neither always meets a cold cache.
                    order = ("plain", "digitlab") if round_ % 2 == 0 else ("digitlab", "plain")
                    for name in order:
                        started = time.perf_counter()
                        rate = (
                            run_plain(cfg, data, steps, seed)
                            if name == "plain"
                            else run_digitlab(cfg, data)
                        )
                        cell = {
                            "model": model,
                            "batch": batch,
                            "threads": args.threads,
                            "pipeline": name,
                            "round": round_ + 1,
                            "steps": steps,
                            "samples_per_s": rate,
                            "call_s": time.perf_counter() - started,
                        }
                        print(PREFIX + json.dumps(cell), flush=True)


def measure(args: argparse.Namespace, argv: list[str]) -> list[dict]:
    """Runs one worker process per thread count; returns every cell it printed."""
    cells = []
    for threads in args.threads:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        command = [sys.executable, __file__, *argv, "--worker-threads", str(threads)]
        with subprocess.Popen(
            command, cwd=PROJECT, env=env, stdout=subprocess.PIPE, text=True
        ) as process:
            for line in process.stdout:
                if line.startswith(PREFIX):
                    cell = json.loads(line[len(PREFIX) :])
                    cells.append(cell)
                    print(
                        f"{cell['threads']} thread(s) round {cell['round']} {cell['model']:<11} "
                        f"batch {cell['batch']:>4} {cell['pipeline']:<8} "
                        f"{cell['samples_per_s']:>10,.0f} samples/s  "
                        f"({cell['call_s']:.1f} s with set-up)",
                        flush=True,
                    )
        if process.returncode != 0:
            sys.exit(f"the {threads}-thread worker failed (exit {process.returncode})")
    return cells


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeats", type=int, default=3, help="rounds over every cell; medians")
    p.add_argument("--window", type=float, default=1.0, help="scales every window's samples")
    p.add_argument(
        "--root",
        type=Path,
        help="the folder holding MNIST/raw/ ($DIGITLAB_DATA)",
        default=Path(os.environ.get("DIGITLAB_DATA", "data")).resolve(),
    )
    p.add_argument("--out", type=Path, default=HERE / "SCALING.md")
    p.add_argument("--json", type=Path, help="also write every cell here")
    p.add_argument("--worker-threads", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker_threads:
        args.threads = args.worker_threads
        worker(args)
        return
    started = {"date": report.now(), "load": report.load_average(), "clock": time.perf_counter()}
    cells = measure(args, argv)
    started["seconds"] = time.perf_counter() - started["clock"]
    started["load_end"] = report.load_average()
    if args.json:
        args.json.write_text(json.dumps({"argv": argv, "cells": cells}, indent=1))
    report.write(args.out, scaling_report.markdown(args, argv, cells, started))


if __name__ == "__main__":
    main()

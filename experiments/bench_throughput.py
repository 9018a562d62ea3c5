"""Training throughput side by side: a plain PyTorch loop, digitlab, and a torchvision DataLoader.

For each model, every repeat runs, in turn and in one process:
  (a) plain   a hand-written loop over the in-memory tensors of digitlab's data module
              (randperm, index, forward, cross-entropy, zero_grad, backward, step);
  (b) digitlab  the real training path, ``digitlab.training.run.train(cfg)``: Lightning Trainer,
              DigitDataModule, DigitClassifier, MLflow logging into a temporary store; its
              throughput is the run's own ``train/samples_per_sec`` (training batches only);
  (c) torchvision  ``torchvision.datasets.MNIST`` over the same IDX files with
              ``ToTensor() + Normalize`` (and ``Resize(32)`` for LeNet-5) through a DataLoader
              (``num_workers=0`` by default, as the common template ships it), same plain loop.
Same network (built from the same config), batch size, optimizer (the config's SGD, lr 0.1) and
step count in all three (checked: a round whose pipelines trained different numbers of samples
stops the benchmark). Prints the median samples/s over the repeats and the ratios b/a, b/c;
``--json`` also keeps every rate (``samples``) and every count of samples trained (``trained``).

    DIGITLAB_DATA=/work/shared/data nice -n 5 uv run python experiments/bench_throughput.py
    ... --accelerator gpu          # the same benchmark on a CUDA device
    ... --clock cpu --threads 1    # CPU time of the training thread instead of wall time
    ... --accelerator gpu --tricks # (a) and (b) with experiment=gpu's tricks (see below)
    ... --steps-per-call 1 20 --no-torchvision   # (b) twice per round, one per value, in turn

``--tricks``: both (a) and (b) train with fused Adam (lr 0.001) and channels_last, and on a GPU
with bf16 autocast and each chunk of ``data.steps_per_call`` steps replayed as one CUDA graph:
(b) through its options (``cuda_graphs=true`` ...), (a) through the same graph helper
(``digitlab.training.cuda_graphs.GraphedSteps``, plain torch) without Lightning, so b/a is what
Lightning and digitlab's module add around identical steps. (c) is left out.

``--steps-per-call N [M ...]``: (b) runs once per value of ``data.steps_per_call`` in every round,
right after (a), named ``digitlab@N`` (plain Lightning is ``digitlab@1``); each gets its own b/a.

``--clock cpu`` counts only the CPU time the training thread itself used, which other processes
on a shared machine do not inflate (with one intra-op thread all the work is on that thread).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

PIPELINES = ("plain", "digitlab", "torchvision")  # without --steps-per-call
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = time.perf_counter  # set from --clock in main()


def compose(model: str, args: argparse.Namespace, store: Path, extra: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from digitlab.config import CONF_DIR, register_resolvers

    register_resolvers()
    tracking_uri = args.tracking_uri or f"sqlite:///{store / 'mlflow.db'}"
    optimizer = ["optimizer=sgd", "optimizer.lr=0.1"]
    if args.tricks:
        optimizer = ["optimizer=adam", "optimizer.lr=0.001", "+optimizer.fused=true"]
        optimizer.append("channels_last=true")
        if args.accelerator == "gpu":
            optimizer += ["trainer.precision=bf16-mixed", "cuda_graphs=true"]
    overrides = [
        f"model={model}",
        f"data.root={args.data_root}",
        f"data.val_size={args.val_size}",
        f"data.batch_size={args.batch_size}",
        *optimizer,
        "trainer.max_epochs=1",
        f"trainer.accelerator={args.accelerator}",
        "test_after_fit=false",
        "trainer.limit_val_batches=1",  # validation is outside the timed window: keep it short
        f"logger.tracking_uri={tracking_uri}",
        f"logger.artifact_location={store / 'artifacts'}",
        "logger.log_checkpoint=false",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_steps(net, batches, steps: int, device) -> tuple[int, float]:
    """The plain loop: ``steps`` SGD steps over ``batches``; returns (samples trained, seconds)."""
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    seen = 0
    synchronize(device)
    start = clock()
    for step, (x, y) in enumerate(batches):
        if step == steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    synchronize(device)
    return seen, clock() - start


def run_plain(cfg, steps: int, device, seed: int) -> tuple[int, float]:
    import torch
    from hydra.utils import instantiate

    from digitlab.data.datamodule import prepare
    from digitlab.training.build import build_datamodule

    images, labels = build_datamodule(cfg).split()["train"]  # digitlab's own split and tensors
    d = cfg.data
    x = prepare(images, device, d.scale, d.mean, d.std, cfg.model.input_size)
    y = labels.to(device)
    torch.manual_seed(seed)
    net = instantiate(cfg.model).to(device)

    def batches():
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)).to(device)
        for start in range(0, len(y), d.batch_size):
            index = order[start : start + d.batch_size]
            yield x[index], y[index]

    return train_steps(net, batches(), steps, device)


def run_plain_tricks(cfg, steps: int, device, seed: int) -> tuple[int, float]:
    """The plain loop with ``--tricks``: the config's optimizer, channels_last, and on a GPU bf16
    autocast and one CUDA graph replay per chunk of ``data.steps_per_call`` steps."""
    import contextlib

    import torch
    from hydra.utils import instantiate

    from digitlab.data.datamodule import prepare
    from digitlab.training.build import build_datamodule
    from digitlab.training.cuda_graphs import GraphedSteps

    images, labels = build_datamodule(cfg).split()["train"]
    d = cfg.data
    x = prepare(images, device, d.scale, d.mean, d.std, cfg.model.input_size)
    y = labels.to(device)
    torch.manual_seed(seed)
    net = instantiate(cfg.model).to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    chunk = d.batch_size * d.steps_per_call
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)).to(device)

    def autocast():
        if cfg.trainer.precision == "bf16-mixed":
            return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
        return contextlib.nullcontext()

    steps_ = GraphedSteps(
        net,
        optimizer,
        [],
        d.batch_size,
        d.steps_per_call,
        (x[order[:chunk]], y[order[:chunk]]),
        autocast=autocast,
        capture=bool(cfg.cuda_graphs),
    )
    seen = 0
    synchronize(device)
    start = clock()
    for begin in range(0, steps * d.batch_size, chunk):
        index = order[begin : begin + chunk]
        if len(index) < chunk:
            break
        steps_.run(x[index], y[index])
        seen += len(index)
    synchronize(device)
    return seen, clock() - start


def run_digitlab(cfg, steps: int) -> tuple[int, float]:
    import lightning as L
    from omegaconf import open_dict

    from digitlab.callbacks import EpochThroughput
    from digitlab.training.run import train

    class CountSamples(L.Callback):
        samples = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.samples += len(batch[1])

    with open_dict(cfg):
        cfg.trainer.limit_train_batches = math.ceil(steps / cfg.data.steps_per_call)
        # train/samples_per_sec is timed by EpochThroughput: ours, with the benchmark's clock.
        del cfg.callbacks["throughput"]
    counted = CountSamples()
    timer = EpochThroughput(clock=clock)
    result = train(cfg, choices={"model": "bench"}, callbacks=[timer, counted])
    rate = result["metrics"]["train/samples_per_sec"]  # what the run itself logged to MLflow
    return counted.samples, counted.samples / rate


def run_torchvision(
    cfg, steps: int, device, seed: int, root: Path, workers: int
) -> tuple[int, float]:
    import torch
    from hydra.utils import instantiate
    from torchvision import datasets, transforms

    d = cfg.data
    steps_ = [transforms.ToTensor(), transforms.Normalize((d.mean,), (d.std,))]
    if cfg.model.input_size != 28:
        steps_.insert(0, transforms.Resize(cfg.model.input_size))
    dataset = datasets.MNIST(root, train=True, transform=transforms.Compose(steps_))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=d.batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )
    torch.manual_seed(seed)
    net = instantiate(cfg.model).to(device)
    return train_steps(net, loader, steps, device)


def same_work(model: str, measured: dict[str, tuple[int, float]], steps_per_call: int) -> None:
    """Stop when the pipelines trained different numbers of samples: their rates would not
    compare (digitlab trains whole Lightning steps of ``data.steps_per_call`` optimizer steps,
    and none of them goes past one epoch of the training split)."""
    counts = {name: count for name, (count, _) in measured.items()}
    if len(set(counts.values())) > 1:
        raise SystemExit(
            f"{model}: the pipelines trained different numbers of samples {counts}: make --steps "
            f"a multiple of data.steps_per_call ({steps_per_call}) and at most one epoch of batches"
        )


def torchvision_root(data_root: Path, into: Path) -> Path:
    """torchvision's MNIST reads uncompressed IDX files: decompress the .gz ones into ``into``."""
    raw = into / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{split}-{kind}-ubyte"
            source = data_root / "MNIST" / "raw" / name
            if source.exists():
                shutil.copy(source, raw / name)
            else:
                with gzip.open(source.with_suffix(".gz")) as f, open(raw / name, "wb") as out:
                    shutil.copyfileobj(f, out)
    return into


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["mlp", "lenet", "lenet5"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds before the repeats")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per measurement")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for (c)")
    p.add_argument("--data-root", type=Path, default=Path(os.environ.get("DIGITLAB_DATA", "data")))
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra config override for (b), e.g. data.steps_per_call=1",
    )
    p.add_argument(
        "--steps-per-call",
        type=int,
        nargs="+",
        help="run (b) once per value of data.steps_per_call, in turn (default: the config's)",
    )
    p.add_argument("--no-torchvision", action="store_true", help="leave (c) out")
    p.add_argument("--clock", choices=list(CLOCKS), default="wall")
    p.add_argument("--tricks", action="store_true", help="(a), (b) with experiment=gpu's tricks")
    p.add_argument("--tracking-uri", help="MLflow store for (b); default: a new temporary one")
    p.add_argument("--json", type=Path, help="write every measurement here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    global clock
    args = parse(argv)
    clock = CLOCKS[args.clock]
    import logging

    import torch

    logging.getLogger("lightning").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    work = Path(tempfile.mkdtemp(prefix="digitlab-bench-"))
    try:
        tv_root = torchvision_root(args.data_root, work / "tv")
        variants = {"digitlab": []}  # (b)'s name -> its extra overrides
        if args.steps_per_call:
            variants = {f"digitlab@{n}": [f"data.steps_per_call={n}"] for n in args.steps_per_call}
        pipelines = ["plain", *variants]
        if not (args.tricks or args.no_torchvision):
            pipelines.append("torchvision")
        samples = {m: {p: [] for p in pipelines} for m in args.models}  # samples/s
        trained = {m: {p: [] for p in pipelines} for m in args.models}  # samples trained
        for round_ in range(args.warmup + args.repeats):
            for model in args.models:
                cfgs = {
                    name: compose(model, args, work / "mlruns", [*args.override, *extra])
                    for name, extra in variants.items()
                }
                cfg = next(iter(cfgs.values()))  # (a) and (c) take no steps_per_call
                steps = args.steps
                seed = 1000 + round_
                plain = run_plain_tricks if args.tricks else run_plain
                measured = {"plain": plain(cfg, steps, device, seed)}
                # the variants take turns going first: no order is favoured over the rounds
                for name, variant in list(cfgs.items())[:: -1 if round_ % 2 else 1]:
                    measured[name] = run_digitlab(variant, steps)
                if "torchvision" in pipelines:
                    measured["torchvision"] = run_torchvision(
                        cfg, steps, device, seed, tv_root, args.workers
                    )
                per_call = math.lcm(*(c.data.steps_per_call for c in cfgs.values()))
                same_work(model, measured, per_call)
                if round_ >= args.warmup:
                    for name, (count, seconds) in measured.items():
                        samples[model][name].append(count / seconds)
                        trained[model][name].append(count)
                rates = "".join(f"  {n} {c / s:9.0f}" for n, (c, s) in measured.items())
                print(f"round {round_ + 1 - args.warmup:>2} {model:<7}{rates}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    medians = {
        m: {p: statistics.median(v) for p, v in by.items() if v} for m, by in samples.items()
    }
    print(
        f"\nmedian samples/s over {args.repeats} repeats, batch {args.batch_size}, "
        f"{args.steps} steps, {args.accelerator}, torch threads {torch.get_num_threads()}, "
        f"{args.clock} clock"
    )
    ours = [p for p in pipelines if p.startswith("digitlab")]
    head = [*(f"({p})" for p in pipelines), *(f"{p}/plain" for p in ours)]
    if "torchvision" in pipelines:
        head += [f"{p}/torchvision" for p in ours]
    print("| model | " + " | ".join(head) + " |")
    print("|---|" + "---:|" * len(head))
    for m, med in medians.items():
        cells = [f"{med[p]:,.0f}" for p in pipelines]
        cells += [f"{med[p] / med['plain']:.2f}" for p in ours]
        if "torchvision" in pipelines:
            cells += [f"{med[p] / med['torchvision']:.2f}" for p in ours]
        print(f"| {m} | " + " | ".join(cells) + " |")
    report = {
        "argv": sys.argv[1:] if argv is None else argv,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}",
        "samples": samples,
        "trained": trained,
        "medians": medians,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()

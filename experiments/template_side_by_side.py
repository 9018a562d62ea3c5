"""digitlab beside ashleve/lightning-hydra-template: one MNIST MLP, whole commands, alternating.

Each round runs the template's ``src/train.py`` (its own code and configs, in its own venv, CPU
trainer, CSV logger) and then ``python -m digitlab``, as fresh processes, on the same network,
batch size, optimizer (Adam, same lr and weight decay), epochs and split sizes (55 000 train,
5 000 validation, 10 000 test). Both load ``experiments/train_clock.py`` through their own Hydra
callback config, so one stopwatch times both: training samples/s (training batches only), the
first training step, the test accuracy. The whole command is timed from launch to exit.

Set-up, once (the template beside this repository, MNIST's files placed so it downloads nothing):

    git clone https://github.com/ashleve/lightning-hydra-template ../template
    uv venv --python 3.11 ../template/.venv
    uv pip install --compile-bytecode --python ../template/.venv/bin/python torch==2.15.0 \\
        torchvision==0.29.2 lightning==2.6.6 torchmetrics==1.9.0 hydra-core==1.3.2 \\
        hydra-colorlog==1.2.0 rootutils rich

Run (writes experiments/TEMPLATE.md):

    DIGITLAB_DATA=../shared/data .venv/bin/python experiments/template_side_by_side.py
    ... --repeats 1 --warmup 0 --epochs 1 --limit-batches 40   # smoke test, marked as such
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_report as report

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
# The template's configs/model/mnist.yaml: SimpleDenseNet, input 784, lin1/2/3_size 64/128/64.
SIZES = (784, 64, 128, 64, 10)
NETWORKS = {
    "template": "the template's MNIST MLP (SimpleDenseNet 784-64-128-64-10, BatchNorm1d and ReLU "
    "after each hidden layer), run unchanged by the template; digitlab builds the same "
    "layer stack from a config (`torch.nn.Sequential`, `trusted_targets=[torch.nn]`)",
    "mlp": "digitlab's `model=mlp model.hidden=[64,128,64]` (784-64-128-64-10, ReLU, no "
    "BatchNorm); the template's `model.net` replaced by the same `torch.nn.Sequential` "
    "(a Hydra override, its code unchanged)",
}
PROJECTS = ("template", "digitlab")
STEPS_PER_CALL = 20  # conf/data/mnist.yaml: optimizer steps per Lightning step in digitlab
CLOCK_PREFIX = "TRAIN_CLOCK "  # train_clock.PREFIX (not imported: that module imports Lightning)


def sequential(batch_norm: bool) -> str:
    """A Hydra override value that builds the network of ``SIZES`` as a ``torch.nn.Sequential``."""
    layers = ["{_target_:torch.nn.Flatten}"]
    for i, (width_in, width_out) in enumerate(zip(SIZES, SIZES[1:], strict=False)):
        layers.append(
            f"{{_target_:torch.nn.Linear,in_features:{width_in},out_features:{width_out}}}"
        )
        if i < len(SIZES) - 2:
            if batch_norm:
                layers.append(f"{{_target_:torch.nn.BatchNorm1d,num_features:{width_out}}}")
            layers.append("{_target_:torch.nn.ReLU}")
    return "{_target_:torch.nn.Sequential,_args_:[" + ",".join(layers) + "]}"


def commands(args: argparse.Namespace, work: Path, seed: int) -> dict[str, list[str]]:
    clock = "+callbacks.train_clock._target_=train_clock.TrainClock"
    hidden = ",".join(map(str, SIZES[1:-1]))
    if args.network == "template":
        digitlab_net = [
            "~model",
            f"+model={sequential(True)}",
            "trusted_targets=[torch.nn,train_clock]",
        ]
        template_net = []
    else:
        digitlab_net = ["model=mlp", f"model.hidden=[{hidden}]", "trusted_targets=[train_clock]"]
        template_net = ["~model.net", f"+model.net={sequential(False)}"]
    template = [
        str(args.template / ".venv/bin/python"),
        "src/train.py",
        "trainer=cpu",
        "logger=csv",
        f"seed={seed}",
        f"trainer.max_epochs={args.epochs}",
        f"data.batch_size={args.batch_size}",
        f"model.optimizer.lr={args.lr}",
        f"model.optimizer.weight_decay={args.weight_decay}",
        f"paths.log_dir={work / 'template-logs'}",
        "~callbacks.rich_progress_bar",
        "+trainer.enable_progress_bar=false",
        clock,
        *template_net,
        *args.template_override,
    ]
    digitlab = [
        sys.executable,
        "-m",
        "digitlab",
        "optimizer=adam",
        f"seed={seed}",
        f"trainer.max_epochs={args.epochs}",
        f"data.batch_size={args.batch_size}",
        f"optimizer.lr={args.lr}",
        f"optimizer.weight_decay={args.weight_decay}",
        "data.val_size=5000",
        "trainer.accelerator=cpu",
        f"data.root={args.root}",
        f"logger.tracking_uri=sqlite:///{work / 'mlruns' / 'mlflow.db'}",
        f"logger.artifact_location={work / 'mlruns' / 'artifacts'}",
        f"hydra.run.dir={work / 'digitlab-outputs' / str(seed)}",
        "trainer.enable_progress_bar=false",
        clock,
        *digitlab_net,
        *args.digitlab_override,
    ]
    if args.limit_batches:  # smoke test: a few batches (digitlab counts Lightning steps of 20)
        n = args.limit_batches
        template += [f"+trainer.limit_{s}_batches={n}" for s in ("train", "val", "test")]
        digitlab += [
            f"trainer.limit_train_batches={math.ceil(n / STEPS_PER_CALL)}",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
        ]
    return {"template": template, "digitlab": digitlab}


def read_clock(output: str) -> dict:
    """The ``TRAIN_CLOCK`` lines of a command's output, folded into one record."""
    record: dict = {"epochs": []}
    for line in output.splitlines():
        if line.startswith(CLOCK_PREFIX):
            values = json.loads(line[len(CLOCK_PREFIX) :])
            if "epoch" in values:
                record["epochs"].append(values)
            else:
                record.update(values)
    return record


def run(command: list[str], cwd: Path, extra_env: dict[str, str]) -> dict:
    """One whole command, launch to exit: its wall time and what its TrainClock printed."""
    env = {
        **os.environ,
        **extra_env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }
    started_unix, started = time.time(), time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        log = (done.stdout + done.stderr)[-4000:]
        sys.exit(f"{command[1]} failed (exit {done.returncode}):\n{log}")
    clock = read_clock(done.stdout)
    samples = sum(e["samples"] for e in clock["epochs"])
    seconds = sum(e["seconds"] for e in clock["epochs"])
    return {
        "wall_s": wall,
        "first_step_s": clock.get("first_step_unix", math.nan) - started_unix,
        "samples_per_s": samples / seconds if seconds else math.nan,
        "test_acc": clock.get("test_acc") or math.nan,
        "params": clock.get("params"),
        "epochs": len(clock["epochs"]),
        "load": report.load_average(),
    }


def place_mnist(template: Path, data_root: Path) -> None:
    """Link MNIST's four files into the template's data folder: it finds them, downloads nothing."""
    raw = template / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{split}-{kind}-ubyte"
            if not (raw / name).exists() and not (raw / f"{name}.gz").exists():
                source = data_root / "MNIST" / "raw" / f"{name}.gz"
                (raw / f"{name}.gz").symlink_to(source.resolve())


def measure(args: argparse.Namespace) -> list[dict]:
    place_mnist(args.template, args.root)
    # The template needs its checkpoints unpickled: its test step loads the best checkpoint, which
    # holds the network object, and torch >= 2.6 loads weights only by default (it would crash).
    env = {"template": {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}, "digitlab": {}}
    cwd = {"template": args.template, "digitlab": PROJECT}
    runs = []
    with tempfile.TemporaryDirectory(prefix="digitlab-vs-template-") as tmp:
        for round_ in range(args.warmup + args.repeats):
            seed = 1000 + round_
            for name, command in commands(args, Path(tmp), seed).items():
                r = run(command, cwd[name], env[name])
                r.update(project=name, round=round_ + 1 - args.warmup, seed=seed)
                print(json.dumps(r), flush=True)
                if round_ >= args.warmup:  # warm-up: MLflow store, IDX extraction, file cache
                    runs.append(r)
    return runs


def medians(runs: list[dict]) -> dict[str, dict[str, float]]:
    keys = ("wall_s", "first_step_s", "samples_per_s", "test_acc")
    return {
        p: {k: statistics.median(r[k] for r in runs if r["project"] == p) for k in keys}
        for p in PROJECTS
    }


def conditions(args: argparse.Namespace, runs: list[dict]) -> str:
    """The report's paragraphs on what both commands share and where each keeps its own way."""
    params = {p: sorted({r["params"] for r in runs if r["project"] == p}) for p in PROJECTS}
    plateau = (
        "it cannot act within so few epochs"
        if args.epochs <= 10
        else "it may lower the lr in a run this long"
    )
    return f"""Network (`--network {args.network}`): {NETWORKS[args.network]}.
Trainable parameters, counted by the callback: template {params["template"]},
digitlab {params["digitlab"]}.

Same in both: Adam, lr {args.lr}, weight decay {args.weight_decay}, batch {args.batch_size},
epochs {args.epochs}, 55 000 / 5 000 / 10 000 train / validation / test images, seed 1000 + round,
CPU, torch's default threads, progress bars off, test with the best checkpoint (by val/acc).
Each as it ships otherwise: the template's `trainer=cpu logger=csv` (CSV logs, checkpoints,
model summary, config tree printed; its ReduceLROnPlateau scheduler has patience 10: {plateau};
its split is a seeded random 55k/5k/10k of train + test together), digitlab's
defaults (MLflow run in a SQLite store, checkpoint upload, logged model, figures; validation
from the training images, MNIST's official test images). The template's test step needs
`TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` (its checkpoints pickle the network object, which torch ≥ 2.6
refuses to load); its code is unchanged. Training samples/s: all epochs' training samples over
their training batches' wall time (validation excluded), timed by `experiments/train_clock.py`
in both. Untimed warm-up rounds first: {args.warmup}; then timed rounds, each the template
then digitlab: {args.repeats}.
"""


def markdown(args: argparse.Namespace, argv: list[str], runs: list[dict], started: dict) -> str:
    med = medians(runs)
    t, d = med["template"], med["digitlab"]
    speed = d["samples_per_s"] / t["samples_per_s"]
    faster = t["wall_s"] / d["wall_s"]
    smoke = (
        "**SMOKE RUN (`--limit-batches`): proves the script runs; these figures are not "
        "results.**\n\n"
        if args.limit_batches
        else ""
    )
    rows = [
        (
            "whole command, launch to exit (s)",
            f"{t['wall_s']:.1f}",
            f"{d['wall_s']:.1f}",
            f"{d['wall_s'] / t['wall_s']:.2f} (digitlab {faster:.2f}× faster)",
        ),
        (
            "first training step after (s)",
            f"{t['first_step_s']:.1f}",
            f"{d['first_step_s']:.1f}",
            f"{d['first_step_s'] / t['first_step_s']:.2f}",
        ),
        (
            "training samples/s",
            f"{t['samples_per_s']:,.0f}",
            f"{d['samples_per_s']:,.0f}",
            f"**{speed:.2f}**",
        ),
        ("test accuracy", f"{t['test_acc']:.2%}", f"{d['test_acc']:.2%}", ""),
    ]
    per_run = [
        (
            r["round"],
            r["project"],
            r["seed"],
            f"{r['wall_s']:.1f}",
            f"{r['first_step_s']:.1f}",
            f"{r['samples_per_s']:,.0f}",
            f"{r['test_acc']:.4f}",
            r["epochs"],
            f"{r['load']:.2f}",
        )
        for r in runs
    ]
    met = {True: "met", False: "not met"}
    goals = (
        f"Goals (issue 14): training samples/s ≥ 2.5× the template's: {met[speed >= 2.5]} "
        f"({speed:.2f}×); whole command ≥ 2× faster: {met[faster >= 2]} ({faster:.2f}×)."
    )
    if args.limit_batches:
        goals = "Goals (issue 14): not judged on a smoke run."
    return f"""# digitlab beside lightning-hydra-template

{smoke}Command (from the repository root), date and machine:

    {" ".join([".venv/bin/python experiments/template_side_by_side.py", *argv])}

- date: {started["date"]} to {report.now()}; load average at the start {started["load"]:.2f}
- machine: {report.machine()}
- digitlab {report.git_commit(PROJECT)}: {report.versions(sys.executable, started["modules"])}
- lightning-hydra-template {report.git_commit(args.template)}: {started["template_versions"]}

{conditions(args, runs)}

## Medians over {args.repeats} round(s)

{report.table(["", "template", "digitlab", "digitlab / template"], rows)}

{goals}

## Every run

{
        report.table(
            [
                "round",
                "project",
                "seed",
                "wall s",
                "first step s",
                "samples/s",
                "test acc",
                "epochs",
                "load avg",
            ],
            per_run,
            right_from=2,
        )
    }
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--template",
        type=Path,
        default=Path(os.environ.get("TEMPLATE_DIR", PROJECT.parent / "template")).resolve(),
    )
    p.add_argument(
        "--root",
        type=Path,
        help="the folder holding MNIST/raw/ ($DIGITLAB_DATA)",
        default=Path(os.environ.get("DIGITLAB_DATA", "data")).resolve(),
    )
    p.add_argument("--network", choices=list(NETWORKS), default="template")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (template, then digitlab)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds before them")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128, help="the template's default")
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--limit-batches", type=int, help="smoke test only: batches per stage")
    p.add_argument("--template-override", action="append", default=[])
    p.add_argument("--digitlab-override", action="append", default=[])
    p.add_argument("--out", type=Path, default=HERE / "TEMPLATE.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    python = args.template / ".venv" / "bin" / "python"
    if not python.exists():
        sys.exit(f"no template environment at {python}: set it up as this script's docstring says")
    modules = ["torch", "lightning", "torchmetrics", "hydra-core"]
    started = {
        "date": report.now(),
        "load": report.load_average(),
        "modules": modules,
        "template_versions": report.versions(python, [*modules, "torchvision"]),
    }
    runs = measure(args)
    report.write(args.out, markdown(args, argv, runs, started))


if __name__ == "__main__":
    main()

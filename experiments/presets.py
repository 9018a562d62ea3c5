"""Run every seed preset on the real data over several seeds and write experiments/PRESETS.md.

    uv run python experiments/presets.py [--root /path/to/data] [--only NAME ...] [--seeds 1 2 3]
                                         [-- OVERRIDE ...]

Each preset trains as ``python -m digitlab experiment=<name> seed=<s>`` in a subprocess (one
MLflow run each, experiment ``presets``), once per seed. The table is rebuilt from the store every
time, from the latest finished run of each (preset, seed): accuracies as mean ± sample std over
the seeds, so ``--only best`` (or two runners at once) updates rows in place; ``--table``
rebuilds it without training.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import statistics
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
    "best_convnet": "with `best`: target ≥ 99.7 % for the 10-member committee (MNIST test)",
    "kaggle_best": "target ≥ 99.6 % for a 5-seed ensemble (Kaggle holdout)",
    "kaggle_best_convnet": "with `kaggle_best`: target ≥ 99.6 % for the committee (Kaggle holdout)",
    "fast": "target ≥ 99 % for every seed, whole command ≤ 15 s (MNIST test)",
}


def machine() -> str:
    gpu = "NVIDIA GPU" if shutil.which("nvidia-smi") else "no GPU"
    return f"{os.cpu_count()}-core {platform.machine()} CPU VM, {gpu}"


def run_preset(name: str, seed: int, root: str, overrides: list[str]) -> None:
    """Train one preset with one seed in a subprocess; output kept in logs/<name>-s<seed>.log."""
    command = [
        sys.executable,
        "-m",
        "digitlab",
        f"experiment={name}",
        f"seed={seed}",
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
    (HERE / "logs" / f"{name}-s{seed}.log").write_text(log)
    found = re.search(r"MLflow run ([0-9a-f]{32})", done.stdout)
    status = (
        f"run {found.group(1)}" if found else f"failed: {(log.strip().splitlines() or ['?'])[-1]}"
    )
    print(f"{name} seed {seed}: {status} after {seconds / 60:.1f} min", flush=True)


# The config groups and keys that make a preset's recipe: a run trained with other values (the
# preset as it was before an edit, or a variant run into the same experiment) is not its row.
RECIPE = (
    "model",
    "optimizer",
    "scheduler",
    "data.augment",
    "data.batch_size",
    "data.val_size",
    "data.test_size",
    "data.split_seed",
    "trainer.max_epochs",
)


def preset_recipe(name: str) -> dict[str, str]:
    """The preset's recipe as it is now, as the flat strings a run logs as params."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from digitlab.config import CONF_DIR, register_resolvers
    from digitlab.tracking.run import flatten

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", [f"experiment={name}"])
    recipe = {}
    for key in RECIPE:
        value = OmegaConf.select(cfg, key)
        if OmegaConf.is_config(value):
            recipe.update(flatten(OmegaConf.to_container(value, resolve=True), f"{key}."))
        else:
            recipe[key] = str(value)
    return recipe


def same_recipe(run, recipe: dict[str, str]) -> bool:
    """Whether ``run`` trained ``recipe`` (params it did not log, as older runs, do not count)."""
    return all(run.data.params.get(key, value) == value for key, value in recipe.items())


def preset_of(run, recipes: dict[str, dict[str, str]]) -> str | None:
    """The preset whose recipe, as it is now, ``run`` trained: the one it was started as, else
    any other (``experiment=best model=convnet`` trained best_convnet's recipe before that
    preset had a name); None if it trained none of them."""
    named = run.data.tags.get("choice.experiment")
    for name in sorted(recipes, key=lambda name: name != named):  # its own name first
        if same_recipe(run, recipes[name]):
            return name
    return None


def latest_runs(tracking_uri: str) -> dict[str, list]:
    """preset -> its latest FINISHED run per seed in experiment ``presets`` (else the latest),
    among the runs that trained the preset's recipe as it is now."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("presets")
    if experiment is None:
        return {}
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    latest: dict[tuple, object] = {}
    recipes = {name: preset_recipe(name) for name in HEADLINES}
    for run in sorted(runs, key=lambda r: r.info.status != "FINISHED"):  # finished ones first
        if "digitlab.sweep_id" in run.data.tags:  # a seed sweep's parent: its children count
            continue
        name = preset_of(run, recipes)
        if name is not None:
            latest.setdefault((name, run.data.params.get("seed")), run)
    by_preset: dict[str, list] = {}
    for (name, _), run in latest.items():
        by_preset.setdefault(name, []).append(run)
    return by_preset


def mean_std(values: list[float]) -> str:
    """``99.03 ± 0.05 %`` (sample std; a single run has none)."""
    if len(values) < 2:
        return f"{values[0]:.2%} (1 seed)"
    return f"{statistics.fmean(values):.2%} ± {statistics.stdev(values) * 100:.2f}"


def table_row(name: str, runs: list) -> str:
    """One preset's row: accuracies as mean ± std over its finished seeds, mean wall time."""
    finished = [r for r in runs if r.info.status == "FINISHED"]
    minutes = [
        ((r.info.end_time or r.info.start_time) - r.info.start_time) / 60_000 for r in finished
    ]
    first = min(runs, key=lambda r: r.info.start_time)
    date = dt.datetime.fromtimestamp(first.info.start_time / 1000, dt.UTC).strftime(
        "%Y-%m-%d %H:%M UTC"
    )
    commits = sorted({r.data.tags.get("mlflow.source.git.commit", "")[:7] or "–" for r in runs})
    seeds = " ".join(sorted((r.data.params.get("seed", "?") for r in finished), key=str))
    if finished:
        ours = mean_std([r.data.metrics["test/acc"] for r in finished])
        val = mean_std([r.data.metrics["val/acc"] for r in finished])
        wall = f"{statistics.fmean(minutes):.1f} min"
    else:  # say how far an unfinished run got rather than leave the preset out
        run = runs[0]
        epochs = int(run.data.metrics.get("epoch", -1)) + 1 if "val/acc" in run.data.metrics else 0
        planned = run.data.params.get("trainer.max_epochs", "?")
        ours, val = f"not finished ({run.info.status} after {epochs} of {planned} epochs)", "–"
        wall = "–"
    return (
        f"| `{name}` | {HEADLINES[name]} | {ours} | {val} | {seeds or '–'} | {wall} "
        f"| {machine()} | {date} | {', '.join(commits)} |"
    )


def write_table(results: dict[str, list]) -> None:
    lines = [
        "# Seed presets on the real data",
        "",
        "Produced by `uv run python experiments/presets.py --root /work/shared/data --seeds 1 2 3` "
        "(each row: `digitlab experiment=<preset> seed=<s>` for every seed, one MLflow run each in "
        "experiment `presets`; accuracies are mean ± sample std over the seeds, in %).",
        '"Ours" is accuracy on MNIST\'s official 10 000 test images (for `mxnet_jl_kaggle`: on the '
        "20 % holdout of Kaggle's train.csv, since Kaggle's test.csv has no labels; for "
        "`kaggle_best`: on the 4 200 rows of train.csv it holds out as its test split), measured "
        "with the checkpoint of the best validation epoch. The MNIST presets hold 5 000 of the "
        "60 000 training images out for validation; the tutorials train on all 60 000 and watch "
        "the test set.",
        "",
        "Machine: the one this table was written on, where every run was made. "
        "Wall time is the MLflow run's start to end (data loading, training, testing; not the few "
        "seconds of Python start-up). Other jobs may have shared the machine's cores during a run, "
        "so wall times are upper bounds; the accuracies do not depend on load. `commit` is the "
        "code the run trained with (its MLflow tag `mlflow.source.git.commit`).",
        "",
        "| preset | seed's headline | ours (test acc, mean ± std) | val acc | seeds | wall time "
        "(mean per run) | machine | date | commit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    kept, rest = earlier_rows_and_sections()
    for name in HEADLINES:
        runs = results.get(name)
        if runs:
            lines.append(table_row(name, runs))
        elif name in kept:  # not run into this store: its earlier row stays, as it was measured
            lines.append(kept[name])
    TABLE.write_text("\n".join(lines) + "\n" + rest)


def earlier_rows_and_sections() -> tuple[dict[str, str], str]:
    """The table's rows now in PRESETS.md (preset -> row, in this table's columns), and the
    sections after the table (written by hand: the seed ensembles), so a run of some presets
    into a new store loses neither."""
    if not TABLE.exists():
        return {}, ""
    text = TABLE.read_text()
    table, _, rest = text.partition("\n## ")
    rows = {}
    for line in table.splitlines():
        found = re.match(r"\| `(\w+)` \|", line)
        if not found:
            continue
        cells = line.strip("|").split(" | ")
        if len(cells) == 8:  # a single-seed row of the earlier table: no seeds column yet
            cells.insert(4, "42 (1 seed)")
        rows[found.group(1)] = "| " + " | ".join(c.strip() for c in cells) + " |"
    return rows, "\n## " + rest if rest else ""


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
        "--seeds",
        nargs="+",
        type=int,
        default=[1, 2, 3],
        help="seeds to train every preset with (the table needs 3 or more)",
    )
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
        for seed in args.seeds:
            run_preset(
                name, seed, args.root, [f"logger.tracking_uri={args.tracking_uri}", *args.overrides]
            )
            write_table(latest_runs(args.tracking_uri))
    write_table(latest_runs(args.tracking_uri))
    print(f"wrote {TABLE}")


if __name__ == "__main__":
    main()

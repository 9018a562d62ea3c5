"""The records recipe: from Kaggle's train.csv alone to submission.csv, measured honestly.

    uv run python experiments/records.py --root /path/to/data        # data/digit-recognizer/*.csv
    uv run python experiments/records.py --root /path/to/data --mnist   # ... and MNIST's t10k

For each member (a preset and a seed; experiment=kaggle_records and kaggle_records_convnet, seed
1 by default: a second seed of either left the committee where it was, and four members overrun
90 minutes of two cores, experiments/RECORDS.md):

1. 5-fold cross-validation over all of train.csv (``data.folds=5``): each fold's network predicts
   the rows it never trained on, with test-time augmentation as the submission is predicted
   (``oof_tta=true``), so the CV parent holds out-of-fold probabilities for every row;
2. the committee's out-of-fold accuracy ± its standard error: the members' out-of-fold
   probabilities averaged (``digitlab-predict --run <cv parents> --data oof``);
3. a final fit of each member on every labelled row (``data.val_size=0``), for the epoch count
   its folds' validation curves picked (the mean over the folds of the epoch of best val/acc);
4. the final fits' committee with test-time augmentation on Kaggle's test.csv
   (``digitlab-predict --run <final fits> --data kaggle --tta``): ``submission.csv``.

``--mnist`` adds the MNIST figures: networks fitted on MNIST's 60 000 training images
(``data=mnist data.val_size=0``, the epochs the Kaggle folds picked), ``--mnist-members`` (default:
the first member's preset) with ``--mnist-seeds`` (default 1 to 5: the goal is a mean over five
seeds), test accuracy on t10k as mean ± std over the seeds per network, and the committee of them
all with TTA (the data root then also holds MNIST/raw).

Members train in parallel processes (``--jobs``, default: one per two cores), each with its share
of the cores' threads. The table printed (and appended to ``--table``, e.g.
experiments/RECORDS.md) holds each member's out-of-fold accuracy, the committee's ± SE, and the
CPU-minutes (user + system time of this process and every child) and wall minutes of each step.
``--quick`` is the same recipe, shrunk (2 folds, 1 epoch, one seed, small batches) for a
smoke test on tiny data.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

MEMBERS = ("kaggle_records", "kaggle_records_convnet")
SEEDS = (1,)
MNIST_SEEDS = (1, 2, 3, 4, 5)
FOLDS = 5
# --quick: the recipe on tiny data, in seconds (also what the test runs).
QUICK = [
    "trainer.max_epochs=1",
    "data.batch_size=32",
    "data.eval_batch_size=64",
    "trainer.accelerator=cpu",
    "figures.enabled=false",
    "logger.log_model=false",
]


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its children that have ended."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Step:
    """Wall and CPU time of one step of the recipe (CPU: this process and its ended children)."""

    def __init__(self, name: str, steps: list[tuple[str, float, float]]) -> None:
        self.name, self.steps = name, steps

    def __enter__(self) -> Step:
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        print(f"records: {self.name} ...", flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        wall, cpu = time.perf_counter() - self.wall, cpu_seconds() - self.cpu
        self.steps.append((self.name, wall / 60, cpu / 60))


def threads(count: int) -> None:
    """A worker's share of the cores: its torch threads (set before any work)."""
    import torch

    torch.set_num_threads(count)


def fit(overrides: list[str]) -> str:
    """One ``digitlab.fit`` in a worker process; its run id (a CV parent's for data.folds)."""
    import digitlab

    return digitlab.fit(*overrides, "trainer.enable_progress_bar=false").run_id


def fit_all(jobs: int, runs: list[list[str]]) -> list[str]:
    """Each override list fitted, ``jobs`` at a time, each in its own process (ended before this
    returns, so their CPU time counts in RUSAGE_CHILDREN)."""
    per_job = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")  # torch threads: never fork a used runtime
    with ProcessPoolExecutor(jobs, context, initializer=threads, initargs=(per_job,)) as pool:
        return list(pool.map(fit, runs))


def picked_epochs(client, parent_id: str, max_epochs: int) -> int:
    """The epoch count the folds of a CV parent pick: the mean over the folds of the epoch
    (counted from 1) of each fold's best val/acc, rounded, within 1..max_epochs."""
    from digitlab.tracking.ensemble import children, get_run

    best = []
    for child in children(client, get_run(client, parent_id)):
        history = sorted(
            client.get_metric_history(child.info.run_id, "val/acc"), key=lambda m: m.step
        )
        if history:
            values = [m.value for m in history]
            best.append(values.index(max(values)) + 1)
    return min(max_epochs, max(1, round(statistics.fmean(best)))) if best else max_epochs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="data root: <root>/digit-recognizer/")
    parser.add_argument("--members", nargs="+", default=list(MEMBERS), help="presets")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--folds", type=int, default=FOLDS)
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow store (default: the project's)"
    )
    parser.add_argument("--out", default="outputs/records", help="folder for submission.csv")
    parser.add_argument("--table", default=None, help="append the table to this Markdown file")
    parser.add_argument("--quick", action="store_true", help="2 folds, 1 epoch, one seed")
    parser.add_argument(
        "--mnist", action="store_true", help="also: the members fitted on MNIST, scored on t10k"
    )
    parser.add_argument(
        "--mnist-members", nargs="+", default=None, help="presets fitted on MNIST (first member)"
    )
    parser.add_argument("--mnist-seeds", nargs="+", type=int, default=list(MNIST_SEEDS))
    parser.add_argument("overrides", nargs="*", help="more overrides for every run")
    args = parser.parse_args(argv)
    if args.quick:
        args.folds, args.seeds, args.mnist_seeds = 2, args.seeds[:1], args.mnist_seeds[:2]
    mnist_members = args.mnist_members or args.members[:1]
    started = datetime.now(UTC)

    import digitlab
    from digitlab.tracking import store
    from digitlab.tracking.store import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    common = [
        f"data.root={Path(args.root).resolve()}",
        f"logger.tracking_uri={uri}",
        "logger.experiment_name=records",
        *(QUICK if args.quick else []),
        *args.overrides,
    ]
    out = Path(args.out).resolve()

    def job(preset: str, seed: int, step: str) -> list[str]:
        """One network's overrides for one step, in a folder of its own: jobs started in one
        second must not share checkpoints."""
        folder = out / "jobs" / f"{preset}-s{seed}-{step}"
        return [f"experiment={preset}", f"seed={seed}", *common, f"hydra.run.dir={folder}"]

    members = [(preset, seed) for preset in args.members for seed in args.seeds]
    steps: list[tuple[str, float, float]] = []

    with Step(f"{args.folds}-fold cross-validation of {len(members)} members", steps):
        cv = fit_all(
            args.jobs,
            [[*job(p, s, "cv"), f"data.folds={args.folds}", "oof_tta=true"] for p, s in members],
        )
    client = store.open_client(uri)
    with Step("committee out-of-fold", steps):
        oof = digitlab.predict(run_id=cv, data="oof", tracking_uri=uri, out=out / "oof.npy")
    assert oof.accuracy is not None and oof.accuracy_se is not None  # train.csv is labelled
    se = oof.accuracy_se
    own = [client.get_run(r).data.metrics for r in cv]
    configured = [int(client.get_run(r).data.params["trainer.max_epochs"]) for r in cv]
    epochs = [picked_epochs(client, r, e) for r, e in zip(cv, configured, strict=True)]
    with Step(f"final fits of {len(members)} members on every row", steps):
        final = fit_all(
            args.jobs,
            [
                [*job(p, s, "final"), "data.val_size=0", f"trainer.max_epochs={e}"]
                for (p, s), e in zip(members, epochs, strict=True)
            ],
        )
    with Step("committee with TTA on test.csv", steps):
        submitted = digitlab.predict(
            run_id=final,
            data="kaggle",
            root=args.root,
            tracking_uri=uri,
            tta=True,
            out=out / "probabilities.npy",
        )

    mnist_lines: list[str] = []
    if args.mnist:
        # Kaggle's test images are MNIST's: the MNIST figures are a separate measurement, the
        # same members fitted on MNIST's 60 000 training images and scored on t10k.
        # each preset for the epochs its first Kaggle member's folds picked (else its own)
        picked = {p: e for (p, _), e in reversed(list(zip(members, epochs, strict=True)))}
        fitted = [(p, s) for p in mnist_members for s in args.mnist_seeds]
        with Step(f"MNIST: final fits of {len(fitted)} networks, t10k", steps):
            on_mnist = fit_all(
                args.jobs,
                [
                    [*job(p, s, "mnist"), "data=mnist", "data.val_size=0"]
                    + ([f"trainer.max_epochs={picked[p]}"] if p in picked else [])
                    for p, s in fitted
                ],
            )
            t10k = digitlab.predict(
                run_id=on_mnist,
                data="mnist",
                root=args.root,
                tracking_uri=uri,
                tta=True,
                out=out / "mnist.npy",
            )
        accs = [client.get_run(r).data.metrics["test/acc"] for r in on_mnist]
        mnist_lines = ["", "| MNIST t10k (final fit on 60 000) | test accuracy |", "|---|---|"]
        for preset in mnist_members:
            mine = [a for (p, _), a in zip(fitted, accs, strict=True) if p == preset]
            spread = statistics.stdev(mine) if len(mine) > 1 else 0.0
            mnist_lines.append(
                f"| {preset}, seeds {' '.join(map(str, args.mnist_seeds))} | "
                f"{100 * statistics.fmean(mine):.3f} ± {100 * spread:.3f} % (mean ± std) |"
            )
        assert t10k.accuracy is not None  # t10k is labelled
        mnist_lines.append(f"| committee of {len(fitted)}, TTA | {100 * t10k.accuracy:.3f} % |")

    quick = " --quick" if args.quick else ""
    given = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["<data>" if a == args.root else a for a in given])
    lines = [
        f"### Records run {started:%Y-%m-%d %H:%M} UTC" + (" (tiny smoke run)" if quick else ""),
        "",
        f"    uv run python experiments/records.py {command}",
        "",
        f"Machine: {os.cpu_count()}-core {platform.machine()}, {args.jobs} members at a time.",
        "",
        "| member | seed | out-of-fold acc. | ± SE | epochs (picked / CV) | CV run | final fit |",
        "|---|---|---|---|---|---|---|",
    ]
    for (preset, seed), metrics, run, fit_id, e, c in zip(
        members, own, cv, final, epochs, configured, strict=True
    ):
        lines.append(
            f"| {preset} | {seed} | {metrics['cv/oof_acc']:.5f} | {metrics['cv/oof_acc_se']:.5f} "
            f"| {e} / {c} | `{run}` | `{fit_id}` |"
        )
    lines += [
        f"| **committee ({len(members)}, mean)** | | **{oof.accuracy:.5f}** | {se:.5f} | | "
        f"`{oof.run_id}` | `{submitted.run_id}` |",
        "",
        f"Out-of-fold over {oof.n} rows of train.csv ({args.folds} folds; each row predicted by "
        "networks that never trained on it); the committee's accuracy ± SE = "
        f"{100 * oof.accuracy:.3f} % ± {100 * se:.3f} %. submission.csv: {submitted.submission}.",
        *mnist_lines,
        "",
        "| step | wall min | CPU-min |",
        "|---|---|---|",
        *(f"| {name} | {wall:.1f} | {cpu:.1f} |" for name, wall, cpu in steps),
        f"| **whole recipe** | **{sum(s[1] for s in steps):.1f}** | "
        f"**{sum(s[2] for s in steps):.1f}** |",
        "",
    ]
    table = "\n".join(lines)
    print(table, flush=True)
    if args.table:
        with open(args.table, "a") as f:
            f.write("\n" + table)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

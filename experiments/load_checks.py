"""What a whole run of experiments/load.py looks like, checked run by run (also by
tests/test_load.py): every sweep's parent and every job's run, metrics, artifacts and Model."""

from __future__ import annotations

import hashlib
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

EPOCHS = 2  # the jobs' trainer.max_epochs: every epoch metric must have a value at each
EPOCH_METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "train/samples_per_sec")
TEST_METRICS = ("test/loss", "test/acc")
# What every child run of the MLP must hold (README, "Pictures in MLflow"), each file non-empty.
RUN_FILES = {"config.yaml", "checkpoints/best.ckpt"} | {
    f"figures/{name}"
    for name in (
        "filters/fc1_init.png",
        "filters/fc1_final.png",
        "filters/fc1_stats_init.json",
        "filters/fc1_stats_final.json",
        "data/samples_train.png",
        "data/samples_val.png",
        "data/samples_test.png",
        "data/label_histogram.png",
        "predictions/confusion_matrix.png",
        "predictions/per_class_accuracy.png",
        "predictions/confident_mistakes.png",
        "predictions/probabilities.png",
    )
}
PARENT_FILES = {"sweep.yaml"} | {
    f"summary/{name}"
    for name in (
        "jobs.csv",
        "jobs.md",
        "target_vs_values.png",
        "repeats.csv",
        "repeats.md",
        "repeats.png",
    )
}
# Signs of trouble counted in the sweeps' and the server's output (none is expected).
TROUBLE = {
    "tracebacks": r"Traceback \(most recent call last\)",
    "locked": r"database is locked",
    "retries": r"[Rr]etrying|Retry\(",
    "HTTP 5xx": r'" 5\d\d\b|status(?: code)?:? 5\d\d',
}


@dataclass
class Checked:
    """What :func:`check_store` looked at and what it found wrong (one line per problem)."""

    runs: int = 0
    failures: list[str] = field(default_factory=list)
    at_once: int = 0  # the most job runs that were RUNNING at the same moment


def count_trouble(*logs: Path) -> dict[str, int]:
    """How often each sign of :data:`TROUBLE` appears in the given output files."""
    text = "\n".join(log.read_text(errors="replace") for log in logs if log.is_file())
    return {name: len(re.findall(pattern, text)) for name, pattern in TROUBLE.items()}


def check_store(
    tracking_uri: str, sweeps: int, jobs: int, epochs: int = EPOCHS, experiment: str = "digitlab"
) -> Checked:
    """Check every run of ``experiment``: ``sweeps`` parents FINISHED with their summaries, each
    with ``jobs`` children FINISHED with every per-epoch and test metric, every artifact
    non-empty, the logged checkpoint byte-identical to the job's own file, and one MLflow Model."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return Checked(0, [f"no experiment {experiment!r} in {tracking_uri}"])
    runs = client.search_runs([found.experiment_id], max_results=10_000)
    models = logged_models(client, found.experiment_id)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    checked = Checked(len(runs), at_once=most_at_once(children))
    if len(parents) != sweeps or len(runs) != sweeps * (jobs + 1):
        checked.failures.append(
            f"{len(parents)} sweeps and {len(runs)} runs in the store, "
            f"expected {sweeps} and {sweeps * (jobs + 1)}"
        )
    for parent in parents:
        own = [r for r in children if r.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        checked.failures += check_parent(client, parent, own, jobs)
        for child in own:
            own_models = models.get(child.info.run_id, [])
            checked.failures += check_child(client, child, epochs, own_models)
    return checked


def most_at_once(runs: list) -> int:
    """The most runs whose start-to-end intervals overlap at one moment."""
    ended = [r.info for r in runs if r.info.end_time]
    events = sorted([(i.start_time, 1) for i in ended] + [(i.end_time, -1) for i in ended])
    level = peak = 0
    for _, step in events:  # at a tie the end (-1) sorts first: touching runs do not overlap
        level += step
        peak = max(peak, level)
    return peak


def logged_models(client, experiment_id: str) -> dict[str, list]:
    """The experiment's MLflow Models by the run that logged them."""
    by_run: dict[str, list] = {}
    token = None
    while True:
        page = client.search_logged_models([experiment_id], max_results=100, page_token=token)
        for model in page:
            by_run.setdefault(model.source_run_id, []).append(model)
        if not (token := page.token):
            return by_run


def file_sizes(list_files, path: str | None = None) -> dict[str, int | None]:
    """``{path: size}`` of every file below ``path``, through a ``list_artifacts``-like call."""
    sizes = {}
    for item in list_files(path):
        if item.is_dir:
            sizes.update(file_sizes(list_files, item.path))
        else:
            sizes[item.path] = item.file_size
    return sizes


def missing_or_empty(who: str, sizes: dict[str, int | None], expected: set[str]) -> list[str]:
    """One line for the expected files that are absent, one for the files of size 0."""
    missing = sorted(expected - set(sizes))
    empty = sorted(p for p, size in sizes.items() if not size)
    return ([f"{who}: missing {missing}"] if missing else []) + (
        [f"{who}: empty {empty}"] if empty else []
    )


def check_parent(client, parent, children: list, jobs: int) -> list[str]:
    """A sweep's parent: FINISHED, ``jobs`` children numbered 0.., its counts, best and files."""
    who, metrics, problems = f"sweep {parent.info.run_name}", parent.data.metrics, []
    if parent.info.status != "FINISHED":
        problems.append(f"{who}: status {parent.info.status}")
    numbers = sorted(int(c.data.tags.get("digitlab.job_num", -1)) for c in children)
    if numbers != list(range(jobs)):
        problems.append(f"{who}: children numbered {numbers}, expected 0..{jobs - 1}")
    for name in ("sweep/jobs", "sweep/finished"):
        if metrics.get(name) != jobs:
            problems.append(f"{who}: {name} = {metrics.get(name)}, expected {jobs}")
    best = max((c.data.metrics.get("val/acc", -1.0) for c in children), default=-1.0)
    if not math.isclose(metrics.get("best/val/acc", -2.0), best, rel_tol=1e-6):
        problems.append(f"{who}: best/val/acc {metrics.get('best/val/acc')}, children's {best}")
    sizes = file_sizes(lambda p: client.list_artifacts(parent.info.run_id, p))
    problems += missing_or_empty(who, sizes, PARENT_FILES)
    if "summary/jobs.csv" in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            table = client.download_artifacts(parent.info.run_id, "summary/jobs.csv", tmp)
            rows = Path(table).read_text().splitlines()[1:]
        if len(rows) != jobs or sum(",FINISHED," in row for row in rows) != jobs:
            problems.append(f"{who}: summary/jobs.csv has {len(rows)} rows, not {jobs} FINISHED")
    return problems


def check_child(client, run, epochs: int, models: list) -> list[str]:
    """One job's run: FINISHED, a finite value of each epoch metric at every epoch, test metrics,
    every artifact non-empty, its checkpoint as the job wrote it, and exactly one READY Model."""
    who, run_id = f"run {run.info.run_name}", run.info.run_id
    problems = [f"{who}: status {run.info.status}"] if run.info.status != "FINISHED" else []
    for name in EPOCH_METRICS:
        history = client.get_metric_history(run_id, name)
        # Logged at Lightning's global step, which is the epoch index only when an epoch is one
        # step (the tiny data): one value per epoch means as many values as epochs, none twice.
        steps = sorted(m.step for m in history)
        if (
            len(set(steps)) != len(steps)
            or len(steps) != epochs
            or not all(math.isfinite(m.value) for m in history)
        ):
            problems.append(
                f"{who}: {name} at steps {steps}, expected one finite value at each "
                f"of its {epochs} epochs"
            )
    for name in TEST_METRICS:
        if not math.isfinite(run.data.metrics.get(name, math.nan)):
            problems.append(f"{who}: no {name}")
    sizes = file_sizes(lambda p: client.list_artifacts(run_id, p))
    problems += missing_or_empty(who, sizes, RUN_FILES)
    if "checkpoints/best.ckpt" in sizes:
        problems += _checkpoint_differs(client, run)
    return problems + _model_problems(client, run, models)


def _checkpoint_differs(client, run) -> list[str]:
    """The logged best.ckpt must be the very file the job wrote (no torn or mixed-up upload)."""
    local = Path(run.data.tags.get("digitlab.checkpoint_dir", "/nonexistent")) / "best.ckpt"
    with tempfile.TemporaryDirectory() as tmp:
        logged = Path(client.download_artifacts(run.info.run_id, "checkpoints/best.ckpt", tmp))
        if local.is_file() and _digest(logged) == _digest(local):
            return []
    return [f"run {run.info.run_name}: the logged best.ckpt differs from {local}"]


def _model_problems(client, run, models: list) -> list[str]:
    """Exactly one READY MLflow Model, with its files and the run's test/acc."""
    who = f"run {run.info.run_name}"
    if len(models) != 1 or models[0].status != "READY":
        return [f"{who}: {len(models)} MLflow Models, expected one READY"]
    (model,) = models
    files = file_sizes(lambda p: client.list_logged_model_artifacts(model.model_id, p))
    problems = missing_or_empty(f"{who}'s Model", files, {"MLmodel", "data/network.ckpt"})
    scored = {m.key: m.value for m in model.metrics or []}.get("test/acc", math.nan)
    if not math.isclose(scored, run.data.metrics.get("test/acc", math.nan), rel_tol=1e-6):
        problems.append(
            f"{who}: its Model's test/acc {scored}, the run's {run.data.metrics.get('test/acc')}"
        )
    return problems


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()

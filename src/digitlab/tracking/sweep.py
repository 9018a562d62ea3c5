"""Groups a Hydra multirun in MLflow: one parent run per sweep, every job its child.

A Hydra callback (``conf/config.yaml``), built at start-up: MLflow (2.0 s to import), pandas and
matplotlib (1 s) load when a sweep starts or ends, where marked lazy."""

from __future__ import annotations

import atexit
import json
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from digitlab.config import project_root
from digitlab.errors import DigitlabError
from digitlab.logs import set_verbosity, verbose_requested
from digitlab.tracking import store as tracking
from digitlab.tracking.owners import owner_tags, reap_dead_owners
from digitlab.tracking.signals import STOP
from digitlab.tracking.store import default_tracking_uri
from digitlab.tracking.tables import markdown_table

log = logging.getLogger(__name__)

# Jobs learn their parent from the environment, which every launcher's jobs inherit (in this
# process, joblib's workers, submitit's fresh processes), where a value in memory would not reach.
PARENT_ENV = "DIGITLAB_PARENT_RUN_ID"
# ... and the keys their sweep varies (a JSON list), which name their runs apart.
SWEPT_ENV = "DIGITLAB_SWEPT_KEYS"
SUMMARY_METRICS = (
    "val/acc",
    "val/loss",
    "test/acc",
    "test/loss",
    "train/acc",
    "train/loss",
    "train/samples_per_sec",
)


def sweep_tags() -> dict[str, str]:
    """Tags that make a multirun job the child of its sweep's parent run (empty otherwise), with
    the job's overrides for the sweep summary's table."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}
    job = HydraConfig.get().job
    return {
        "mlflow.parentRunId": parent,
        "digitlab.job_num": str(job.num),
        "digitlab.overrides": shlex.join(HydraConfig.get().overrides.task),
    }


def _parse(overrides) -> list:
    return OverridesParser.create().parse_overrides(list(overrides))


def varied_keys(config: DictConfig) -> list[str]:
    """The keys a sweep varies: its command line's sweeps (``a=1,2``, ``range(3)``...), then its
    sweeper's search space (``hydra.sweeper.params``)."""
    keys = [o.key_or_group for o in _parse(config.hydra.overrides.task) if o.is_sweep_override()]
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return keys + [k for k in params if k not in keys]


def swept_values() -> dict[str, str]:
    """This multirun job's values of the keys its sweep varies, e.g. ``{"optimizer.lr": "0.1"}``."""
    keys = json.loads(os.environ.get(SWEPT_ENV) or "[]")
    if not keys or not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}
    given = {
        o.key_or_group: o.get_value_element_as_str()
        for o in _parse(HydraConfig.get().overrides.task)
    }
    return {k: given[k] for k in keys if k in given}


def mapping(container: object) -> dict[str, Any]:
    """A config node's container, a mapping by construction (OmegaConf types it as any)."""
    assert isinstance(container, dict), type(container)
    return container


class MlflowSweep(Callback):
    """Parent MLflow run for a multirun, with a summary table and plot of ``target`` when it
    ends, and statistics over the ``repeat`` keys (seeds) when one varies."""

    def __init__(
        self, target: str = "val/acc", repeat: list[str] | tuple[str, ...] = ("seed",)
    ) -> None:
        self.target, self.repeat = target, list(repeat)
        self.parent_id: str | None = None
        self.tracking_uri: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from digitlab.tracking.run import log_params  # lazy: MLflow, 2.0 s

        set_verbosity(verbose_requested(config))  # before MLflow's first lines, as a run does
        logger_cfg = config.logger
        client, experiment_id = tracking.open_experiment(logger_cfg)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweeper = mapping(OmegaConf.to_container(config.hydra.sweeper, resolve=False))
        launcher = OmegaConf.select(config.hydra, "launcher._target_", default="?")
        settings = {  # what defines the sweep
            "overrides": list(config.hydra.overrides.task),
            "sweeper": sweeper.get("_target_", "?").rsplit(".", 1)[-1],
            "sweeper_params": sweeper.get("params") or {},
            "launcher": launcher.rsplit(".", 1)[-1],
        }
        program = Path(sys.argv[0]).name
        program = "python -m digitlab" if program == "__main__.py" else program
        command = " ".join([program, shlex.join(sys.argv[1:])])
        sweep_id = f"{sweep_dir.parent.name}/{sweep_dir.name}"  # e.g. 2026-11-20/23-59-01
        tags = {
            **owner_tags(),
            "digitlab.sweep_id": sweep_id,
            "digitlab.sweep_dir": str(sweep_dir),
            "digitlab.command": command,
            "mlflow.note.content": f"Sweep: `{command}`",
        }
        run = client.create_run(
            experiment_id, run_name="sweep-" + sweep_id.replace("/", "-"), tags=tags
        )
        self.parent_id, self.tracking_uri = run.info.run_id, logger_cfg.tracking_uri
        params = {
            "sweep.overrides": " ".join(settings["overrides"]),
            "sweep.sweeper": settings["sweeper"],
            "sweep.launcher": settings["launcher"],
        }
        params.update({f"sweep.params.{k}": str(v) for k, v in settings["sweeper_params"].items()})
        log_params(client, self.parent_id, params)
        client.log_dict(self.parent_id, settings, "sweep.yaml")
        os.environ[PARENT_ENV] = self.parent_id
        os.environ[SWEPT_ENV] = json.dumps(varied_keys(config))
        atexit.register(self._abandon)
        global _active
        _active = self
        STOP.watch()  # the first signal stops the launcher's wait, a second exits at once
        log.info("MLflow parent run %s groups this sweep", self.parent_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_id is None or self.tracking_uri is None:
            return
        client = tracking.open_client(self.tracking_uri)
        parent_id = self.parent_id
        try:
            outcome = summarise(
                client, parent_id, self.target, Path(str(config.hydra.sweep.dir)), self.repeat
            )
            registered = _register_best(client, parent_id, config)
        finally:
            client.set_terminated(parent_id, "FINISHED")
            os.environ.pop(PARENT_ENV, None)
            os.environ.pop(SWEPT_ENV, None)
            self.parent_id = None
        # once the parent is FINISHED, so that what it says is what the store holds
        root = OmegaConf.select(config, "data.root", default=None)
        lines = closing_lines(client, parent_id, self.target, outcome, registered, root)
        print("\n" + "\n".join(lines), flush=True)

    def _abandon(self) -> list[str]:
        """The sweep died before on_multirun_end: it ends KILLED after a signal, else FAILED, and
        the runs its stopped worker processes left RUNNING are reaped (a line for each)."""
        if self.parent_id is None or self.tracking_uri is None:
            return []
        client = tracking.open_client(self.tracking_uri)
        status = "KILLED" if STOP.signal else "FAILED"
        client.set_terminated(self.parent_id, status)
        experiment_id = client.get_run(self.parent_id).info.experiment_id
        self.parent_id = None
        os.environ.pop(SWEPT_ENV, None)
        return reap_dead_owners(client, experiment_id)


def _register_best(client, parent_id: str, config: DictConfig) -> str | None:
    """With ``logger.register_as``: register the best child and return the line saying so. A
    failure is said on stderr: the sweep itself succeeded."""
    name = OmegaConf.select(config, "logger.register_as")
    if not name:
        return None
    from digitlab.tracking.registry import register  # lazy: MLflow, 2.0 s

    try:
        return register(client, parent_id, name).line()
    except DigitlabError as e:
        print(
            f"digitlab: the sweep's best model was not registered: {e}", file=sys.stderr, flush=True
        )
        return None


def closing_lines(
    client,
    parent_id: str,
    target: str,
    outcome: dict[str, Any],
    registered: str | None = None,
    root: str | None = None,
) -> list[str]:
    """What a sweep prints at its end: jobs finished, the best one with its varied values and
    ``target``, the parent run, and the commands that use them. ``root``: the sweep's data root,
    given to the predict command when not the default (a prediction reads its own)."""
    uri = client.tracking_uri
    store = "" if uri == default_tracking_uri() else f" --tracking-uri {uri}"
    parent = client.get_run(parent_id).info.run_name
    lines = [
        f"digitlab: sweep {parent} finished: {outcome['jobs']} jobs, {outcome['finished']} FINISHED"
    ]
    best = outcome["best"]
    if best is None:
        lines.append(f"  no FINISHED job has {target}: nothing to predict with or register")
    else:
        values = " ".join(f"{k}={best.get(k)}" for k in outcome.get("varied", ()))
        lines.append(
            f"  best job {best['job']}{f' ({values})' if values else ''}: {best['run_name']} "
            f"(run {best['run_id']}), {target} {best[target]:.4f}"
        )
    lines.append(f"  MLflow parent run {parent_id} in {uri}")
    if best is not None:
        default_root = os.environ.get("DIGITLAB_DATA") or str(project_root() / "data")
        data_root = (
            "" if not root or str(root) == default_root else f" --root {shlex.quote(str(root))}"
        )
        lines += next_commands(client, parent_id, best["run_id"], store, registered, data_root)
    if study := outcome.get("study"):
        lines.append(
            f"  the study in optuna-dashboard: {study['dashboard']}, "
            f"then open {study['dashboard_link']}"
        )
    return lines


def next_commands(
    client, parent_id: str, best_id: str, store: str, registered: str | None, root: str = ""
) -> list[str]:
    """The commands that use a sweep's jobs, or why one would fail."""
    from digitlab.tracking.registry import model_source  # lazy: MLflow, 2.0 s

    best = client.get_run(best_id)
    logged = client.list_artifacts(best_id, "checkpoints")
    if any(a.path.endswith(".ckpt") for a in logged):
        data = best.data.tags.get("choice.data", "mnist")
        predict = (
            "predict with the finished jobs as a committee: "
            f"uv run digitlab-predict --run {parent_id} --data {data}{root}{store}"
        )
    else:
        predict = (
            f"no committee to predict with: run {best_id} logged no checkpoint"
            f"{_switched_off(best, 'logger.log_checkpoint')}"
        )
    if registered:
        return [f"  {predict}", f"  {registered}"]
    try:
        model_source(client, best_id)
        register = f"register the best job: uv run digitlab-register {best_id} --name NAME{store}"
    except DigitlabError:
        register = (
            f"nothing to register: run {best_id} logged no model"
            f"{_switched_off(best, 'logger.log_model')}"
        )
    return [f"  {predict}", f"  {register}"]


def _switched_off(run, key: str) -> str:
    """Why a job logged no checkpoint or model, in parentheses."""
    if run.data.params.get(key) == "False":
        return f" ({key}=false)"
    if "digitlab.cv_folds" in run.data.tags:
        return " (a cross-validation: its fold runs hold them)"
    return ""


# The sweep running in this process, if any.
_active: MlflowSweep | None = None


def end_interrupted_sweep() -> tuple[str, int] | None:
    """After a signal stopped the launcher's wait on jobs in other processes: end the parent
    run and the jobs' runs KILLED; the line to print and the exit status (None: no sweep)."""
    sweep = _active
    if sweep is None or sweep.parent_id is None:
        return None
    parent, signum = sweep.parent_id, STOP.signal or signal.SIGINT
    jobs = sweep._abandon()
    also = ", and so are the runs of the jobs it stopped (resume=<run id> continues one)"
    return (
        f"{signum.name} stopped the sweep; its parent run {parent} is KILLED{also if jobs else ''}",
        128 + signum,
    )


def child_rows(client, parent_id: str) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per child run (job number, status, overrides, final metrics) and the keys."""
    run = client.get_run(parent_id)
    children = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=10_000
    )
    rows, keys = [], []
    for child in children:
        row: dict[str, Any] = {
            "job": int(child.data.tags.get("digitlab.job_num", -1)),
            "run_name": child.info.run_name,
            "status": child.info.status,
        }
        for override in shlex.split(child.data.tags.get("digitlab.overrides", "")):
            key, _, value = override.partition("=")
            key = key.lstrip("+~")
            row[key] = value
            if key not in keys:
                keys.append(key)
        row.update({m: child.data.metrics.get(m) for m in SUMMARY_METRICS})
        row["run_id"] = child.info.run_id
        rows.append(row)
    rows.sort(key=lambda r: r["job"])
    return rows, keys


def swept_keys(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """The override keys whose value differs between jobs (the ones worth plotting)."""
    return [k for k in keys if len({str(r.get(k)) for r in rows}) > 1]


def summarise(
    client,
    parent_id: str,
    target: str,
    sweep_dir: Path,
    repeat: list[str] | tuple[str, ...] = ("seed",),
) -> dict[str, Any]:
    """Log the children's table, the target-vs-values plot, the statistics over the ``repeat``
    keys and Optuna's result; return what :func:`closing_lines` says."""
    # lazy: pandas and matplotlib, 1 s, for a sweep's end only
    import pandas as pd

    from digitlab.figures.plots.sweep import plot_target_vs_values
    from digitlab.tracking.repeats import log_repeats

    rows, keys = child_rows(client, parent_id)
    varied = swept_keys(rows, keys)
    frame = pd.DataFrame(
        rows, columns=["job", "run_name", "status", *keys, *SUMMARY_METRICS, "run_id"]
    )
    client.log_text(parent_id, frame.to_csv(index=False), "summary/jobs.csv")
    # The markdown table is for reading: only the overrides that differ between jobs.
    shown = ["job", "status", *varied, *SUMMARY_METRICS, "run_id"]
    client.log_text(parent_id, markdown_table(frame[shown]), "summary/jobs.md")
    figure = plot_target_vs_values(rows, varied or keys, target)
    client.log_figure(parent_id, figure, "summary/target_vs_values.png")
    log_repeats(client, parent_id, rows, varied, list(repeat))

    metrics = {
        "sweep/jobs": len(rows),
        "sweep/finished": sum(r["status"] == "FINISHED" for r in rows),
    }
    # a pruned (KILLED) trial stopped at an early epoch: it does not compete for best
    scored = [r for r in rows if r.get(target) is not None and r["status"] == "FINISHED"]
    best = max(scored, key=lambda r: r[target]) if scored else None
    if best is not None:
        metrics[f"best/{target}"] = best[target]
        client.set_tag(parent_id, "digitlab.best_run_id", best["run_id"])
    optuna_result, study = sweep_dir / "optimization_results.yaml", None
    if optuna_result.is_file():  # written by the Optuna sweeper just before this callback runs
        study = mapping(OmegaConf.to_container(OmegaConf.load(optuna_result)))
        log_study(client, parent_id, optuna_result, study)
        if "best_value" in study:
            metrics["optuna/best_value"] = float(study["best_value"])
        if "n_pruned" in study:
            metrics["optuna/pruned"] = float(study["n_pruned"])
    for name, value in metrics.items():
        client.log_metric(parent_id, name, float(value))
    return {
        "jobs": metrics["sweep/jobs"],
        "finished": metrics["sweep/finished"],
        "best": best,
        "varied": varied,
        "study": study,
    }


def log_study(client, parent_id: str, result_file: Path, result: dict[str, Any]) -> None:
    """The Optuna sweeper's result on the parent: the file, the best parameters as tags, and the
    study's optuna-dashboard link in the run's description."""
    client.log_artifact(parent_id, str(result_file), "summary")
    for key, value in (result.get("best_params") or {}).items():
        client.set_tag(parent_id, f"optuna.best.{key}", str(value))
    if "study_name" in result:
        client.set_tag(parent_id, "optuna.study_name", result["study_name"])
        client.set_tag(parent_id, "optuna.storage", result["storage"])
        client.set_tag(parent_id, "optuna.dashboard", result["dashboard_link"])
        note = client.get_run(parent_id).data.tags.get("mlflow.note.content", "")
        client.set_tag(
            parent_id,
            "mlflow.note.content",
            (
                f"{note}\n\nOptuna study `{result['study_name']}` ({result['n_trials']} trials, "
                f"{result['n_pruned']} pruned): [open it in optuna-dashboard]"
                f"({result['dashboard_link']}) after starting `{result['dashboard']}`"
            ).strip(),
        )

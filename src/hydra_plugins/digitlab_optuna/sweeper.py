"""Hydra sweeper running a stored Optuna (>= 4) study with ask/tell: ``hydra/sweeper=optuna``.

hydra-optuna-sweeper, Hydra's own plugin, pins ``optuna<3`` and hides the trial from the job, so
no job can report or be pruned. This one keeps its config keys and override syntax, stores the
study in an RDB (``digitlab.search.study``), and hands every job its trial number so the job reports
``val/acc`` each epoch and stops when the pruner says so.

Hydra imports every module under ``hydra_plugins`` for every command; Optuna (0.3 s to import,
with ``digitlab.search.space``) is imported only when a sweep starts, in the methods marked lazy.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from digitlab.errors import DigitlabError
from digitlab.search.study import (
    TRIAL_ENV,
    dashboard_command,
    dashboard_link,
    instantiate_optional,
    open_storage,
    storage_url,
)

log = logging.getLogger(__name__)


class OptunaSweeper(Sweeper):
    """Ask ``n_jobs`` trials, launch them as one batch, tell their results; ``n_trials`` in all.
    The arguments are ``hydra.sweeper``'s keys, as conf/hydra/sweeper/optuna.yaml describes them;
    ``catch`` works as Optuna's ``optimize(catch=...)``, by dotted class names.
    """

    # Set by setup(), which Hydra calls before sweep().
    config: DictConfig
    launcher: Launcher

    def __init__(
        self,
        direction: Literal["maximize", "minimize"] = "maximize",
        study_name: str = "digitlab",
        storage: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        max_failure_rate: float = 0.0,
        catch: Any = (),
        sampler: Any = None,
        pruner: Any = None,
        params: Any = None,
    ) -> None:
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.n_trials, self.n_jobs = n_trials, max(1, n_jobs)
        self.max_failure_rate, self.catch = max_failure_rate, tuple(catch or ())
        self.sampler_cfg, self.pruner_cfg, self.params = sampler, pruner, params

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> None:
        from digitlab.search.space import search_space  # lazy: Optuna, see the top

        try:
            distributions, fixed = search_space(self.params, arguments)
            study = self._open_study()
        except DigitlabError as e:  # one line, as the command line reports a job's bad input
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"digitlab: {e.kind}: {e}", file=sys.stderr, flush=True)
            sys.exit(e.exit_code)
        log.info(
            "Optuna study %r in %s: %d trial(s) so far",
            study.study_name,
            self.storage_url,
            len(study.trials),
        )
        job_idx, to_go = 0, self.n_trials
        while to_go > 0:
            batch = [study.ask(distributions) for _ in range(min(self.n_jobs, to_go))]
            overrides = [self._overrides(trial, fixed) for trial in batch]
            returns = self.launcher.launch(overrides, initial_job_idx=job_idx)
            job_idx += len(returns)
            self._tell(study, batch, returns)
            to_go -= len(batch)
        self._save_results(study)

    def _open_study(self):
        import optuna  # lazy: see the top

        self.storage_url = storage_url(self.storage, self.config.logger.tracking_uri)
        self._storage = open_storage(self.storage_url)
        return optuna.create_study(
            study_name=self.study_name,
            storage=self._storage,
            sampler=instantiate_optional(self.sampler_cfg),
            pruner=instantiate_optional(self.pruner_cfg),
            direction=self.direction,
            load_if_exists=True,  # the same command again continues the study
        )

    @staticmethod
    def _overrides(trial, fixed: dict[str, str]) -> list[str]:
        values = {**trial.params, **fixed}
        return [
            *(f"{key}={value}" for key, value in values.items()),
            # A hydra.* override: it reaches the job's process but not its task config or tags.
            f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}",
        ]

    def _tell(self, study, batch, returns: Sequence[JobReturn]) -> None:
        """Record each job's outcome: COMPLETE with its value, PRUNED, or FAIL."""
        import optuna  # lazy: see the top

        failures = []
        for trial, ret in zip(batch, returns, strict=True):
            try:
                # Hydra's return_value re-raises a failed job's exception; it also writes an
                # "Error executing job" line, which is noise for a pruned trial and is written
                # again, with the trace, where the sweep stops below.
                with contextlib.redirect_stderr(io.StringIO()):
                    value = ret.return_value
            except optuna.TrialPruned as pruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                log.info("Trial %d pruned: %s", trial.number, pruned)
                continue
            except Exception as error:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                if isinstance(error, tuple(get_class(name) for name in self.catch)):
                    log.warning("Trial failed (%s); the search goes on", error)
                else:
                    failures.append(ret)
                continue
            if _is_number(value):
                study.tell(trial, float(value))
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                failures.append(ret)
        if failures and len(failures) / len(returns) > self.max_failure_rate:
            log.error(
                "%d of %d trials failed (max_failure_rate=%s)",
                len(failures),
                len(returns),
                self.max_failure_rate,
            )
            for ret in failures:
                if ret.status != JobStatus.COMPLETED:
                    ret.return_value  # raises the job's own exception, with its trace  # noqa: B018
            raise ValueError(f"a trial returned {failures[0].return_value!r}, not a number")

    def _save_results(self, study) -> None:
        """``optimization_results.yaml`` in the sweep folder: the sweep callback logs it."""
        import optuna  # lazy: see the top

        states = optuna.trial.TrialState
        done = study.get_trials(deepcopy=False, states=(states.COMPLETE,))
        result: dict[str, Any] = {
            "name": "optuna",
            "study_name": study.study_name,
            "storage": self.storage_url,
            "n_trials": len(study.trials),
            "n_pruned": len(study.get_trials(deepcopy=False, states=(states.PRUNED,))),
            "dashboard": dashboard_command(self.storage_url),
            "dashboard_link": dashboard_link(self._storage.get_study_id_from_name(self.study_name)),
        }
        if done:
            result["best_params"] = study.best_trial.params
            result["best_value"] = study.best_trial.value
            log.info("Best value %s with %s", study.best_value, study.best_params)
        path = Path(str(self.config.hydra.sweep.dir)) / "optimization_results.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(result), path)


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True

"""Command line: ``digitlab [group=option ...] [key=value ...] [-m]`` (Hydra's grammar)."""

from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from digitlab.cli.help import render, wants_help
from digitlab.clock import job_started
from digitlab.config import CONF_DIR, register_resolvers
from digitlab.config.command import check_command_line
from digitlab.errors import DigitlabError, Interrupted
from digitlab.search.study import TRIAL_ENV
from digitlab.tracking.store import ui_command
from digitlab.tracking.sweep import end_interrupted_sweep

register_resolvers()


def _report(result: dict, tracking_uri: str) -> None:
    metrics = result["metrics"]
    shown = "   ".join(
        f"{k} {metrics[k]:.4f}" for k in ("test/acc", "test/loss", "val/acc") if k in metrics
    )
    print(
        f"\ndigitlab: {result['run_name']} finished in {result['seconds']:.1f} s\n"
        f"  {shown}\n"
        f"  MLflow run {result['run_id']} in {tracking_uri}\n"
        f"  open the UI: {ui_command(tracking_uri)}",
        flush=True,
    )


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _run(cfg: DictConfig) -> float | None:
    # lazy: the checks and data readers, 0.5 s, which --help does without
    from digitlab.jobs.preflight import preflight
    from digitlab.jobs.resume import config_to_resume

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        job_started()  # its time to first step counts from here, not from the sweep's start
    try:
        # resume=: the run's stored config, the command's overrides checked against it
        cfg = config_to_resume(cfg, list(hydra_cfg.overrides.task))
        data = preflight(cfg)  # config, store and data files, before torch is imported
        from digitlab.jobs.train import run_job  # lazy: torch and Lightning, 12 s, after them

        runtime = hydra_cfg.runtime
        choices = dict(runtime.choices)
        result = run_job(cfg, runtime.output_dir, choices, data, sweeper_cfg=hydra_cfg.sweeper)
    except DigitlabError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"digitlab: {e.kind}: {e}", file=sys.stderr, flush=True)
        if os.environ.get(TRIAL_ENV) and not isinstance(e, Interrupted):
            raise  # the Optuna sweeper records the trial FAILED and decides whether to go on
        sys.exit(e.exit_code)
    if result["run_id"] is not None:  # DDP: rank 0 reports; the other ranks record nothing
        _report(result, cfg.logger.tracking_uri)
    if result.get("pruned"):  # the Optuna sweeper records the trial PRUNED
        import optuna  # lazy: 0.3 s, for a pruned trial only

        raise optuna.TrialPruned(result["pruned"])
    global _ALONE
    _ALONE = (
        HydraConfig.get().mode == RunMode.RUN
        and result["run_id"] is not None
        and cfg.trainer.get("devices", 1) == 1
        and cfg.trainer.get("num_nodes", 1) == 1
    )
    return result["metrics"].get("val/acc")


# True once a single-process, single-run command has recorded everything: it then leaves without
# the interpreter's teardown (unloading torch, triton and CUDA takes 2-3 s, experiments/RESULTS.md),
# once Hydra's job has ended; the MLflow client is synchronous, and the logs are flushed here.
_ALONE = False


def _refuse(e: DigitlabError) -> None:
    """Stop with the error's one line, or its trace with ``HYDRA_FULL_ERROR=1``."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise e
    print(f"digitlab: {e.kind}: {e}", file=sys.stderr, flush=True)
    sys.exit(e.exit_code)


def main() -> None:
    try:
        # Misspelt options, keys and added keys, and an output folder that cannot be written:
        # answered before Hydra creates that folder, a sweep starts a job, or torch is imported.
        check_command_line(sys.argv[1:], CONF_DIR)
    except DigitlabError as e:
        _refuse(e)
    if wants_help(sys.argv[1:]):
        try:
            print(render(sys.argv[1:], CONF_DIR))
        except Exception as e:  # a bad override: Hydra's message, one line
            print(f"digitlab: error: {str(e).splitlines()[0]}", file=sys.stderr)
            sys.exit(1)
        return
    try:
        _run()
    except KeyboardInterrupt:
        # Only a sweep's own process gets here (a run turns Ctrl-C into its one-line Interrupted):
        # its launcher was waiting on jobs in other processes when the signal came.
        ended = end_interrupted_sweep()
        if ended is None:
            raise
        print(f"digitlab: interrupted: {ended[0]}", file=sys.stderr, flush=True)
        sys.exit(ended[1])
    if _ALONE:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()

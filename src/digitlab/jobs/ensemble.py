"""Predicting with several members: who they are (a sweep's parent stands for its
finished children), loading each as a single run is loaded, and the ensemble's own MLflow run."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from digitlab.config.classes import run_classes
from digitlab.errors import DigitlabError
from digitlab.jobs.inputs import data_name, images_for, kaggle_caveat
from digitlab.jobs.outputs import Prediction, write_predictions
from digitlab.serving.ensemble import Member, accuracy, combine, member_probabilities
from digitlab.tracking.ensemble import (
    ensemble_run,
    finished_children,
    get_run,
    log_results,
    run_checkpoint,
)
from digitlab.training.checkpoints import network_from_checkpoint


class Roster:
    """The members found so far, and those left out: a member that is missing or refused raises
    a one-line error naming it, or with ``skip_missing`` prints one line and is left out."""

    def __init__(self, skip_missing: bool) -> None:
        self.skip_missing = skip_missing
        self.sources: dict[str, str | None] = {}  # name -> run id (None: a checkpoint file)
        self.sweeps: list[str] = []
        self.skipped: list[str] = []

    def miss(self, name: str, error: DigitlabError) -> None:
        if not self.skip_missing:
            raise DigitlabError(
                f"ensemble member {name}: {error}; or pass --skip-missing to predict with the "
                "other members"
            ) from None
        print(f"digitlab: skipped member {name}: {error}", file=sys.stderr, flush=True)
        self.skipped.append(f"{name}: {error}")


def find_members(client, runs: Sequence[str], files: Sequence[str], roster: Roster) -> None:
    """Add each run (a sweep's parent: its FINISHED children, said in one line) and each
    checkpoint file to ``roster``."""
    for run_id in runs:
        try:
            run = get_run(client, run_id)
        except DigitlabError as e:
            roster.miss(run_id, e)
            continue
        finished, others = finished_children(client, run)
        if not finished and not others:  # a training run
            roster.sources.setdefault(run_id, run_id)  # a member counts once
            continue
        left_out = f"not finished, left out: {', '.join(others)}" if others else ""
        if not finished:
            roster.miss(
                run_id,
                DigitlabError(
                    f"sweep run {run_id} has no FINISHED child ({left_out}): wait for its jobs to "
                    "end, or name finished runs with --run"
                ),
            )
            continue
        print(
            f"digitlab: sweep run {run_id}: {len(finished)} finished children are members"
            + (f"; {left_out}" if others else ""),
            flush=True,
        )
        roster.sweeps.append(run_id)
        for child in finished:
            roster.sources.setdefault(child, child)
    for path in files:
        roster.sources.setdefault(str(path), None)


def load_members(client, roster: Roster, trusted: tuple[str, ...]) -> list:
    """Each member's network and run config, through the one checkpoint path
    (:func:`digitlab.training.checkpoints.network_from_checkpoint`: weights only, allow-list)."""
    members = []
    with tempfile.TemporaryDirectory(prefix="digitlab-ensemble-") as tmp:
        for number, (name, run_id) in enumerate(roster.sources.items()):
            try:
                path = (
                    run_checkpoint(client, run_id, Path(tmp) / str(number))
                    if run_id is not None
                    else Path(name)
                )
                net, config = network_from_checkpoint(path, trusted)
            except DigitlabError as e:
                roster.miss(name, e)
                continue
            members.append(Member(name, run_id, net, config))
    if not members:
        raise DigitlabError(
            "no ensemble member is left (each was missing or refused, above): give runs or "
            "checkpoints that predict on their own"
        )
    return members


def members_table(members: Sequence, accuracies: Sequence[float | None]) -> str:
    """CSV, one row per member: its run (or file), network, preprocessing and own accuracy."""
    rows = [{**m.describe(), "accuracy": a} for m, a in zip(members, accuracies, strict=True)]
    return pd.DataFrame(rows).to_csv(index=False)


def same_classes(members: Sequence) -> tuple[str, ...]:
    """The classes every member was trained on; one line when two members' differ (their
    probabilities cannot be averaged, nor their votes counted, class by class)."""
    first = run_classes(members[0].config)
    for member in members[1:]:
        if (theirs := run_classes(member.config)) != first:
            raise DigitlabError(
                f"ensemble members differ in their classes: {members[0].name} has "
                f"{len(first)} ({', '.join(first[:5])}, ...), {member.name} {len(theirs)} "
                f"({', '.join(theirs[:5])}, ...): combine runs trained on one data set"
            )
    return first


def predict_ensemble(
    client,
    runs: Sequence[str],
    files: Sequence[str],
    data: str,
    root: Path | None,
    out: str | Path | None,
    trusted: tuple[str, ...],
    command: str,
    tta: bool,
    method: str,
    skip_missing: bool,
) -> Prediction:
    """:func:`digitlab.jobs.predict.predict` for several members: the same files, plus the
    ensemble's run in ``client``'s store, which the :class:`Prediction` names with its members,
    method and the members skipped. ``command``: the ``digitlab-predict`` line it records."""
    roster = Roster(skip_missing)
    find_members(client, runs, files, roster)
    members = load_members(client, roster, trusted)
    classes = same_classes(members)
    configs = [(m.name, m.config) for m in members]
    images, labels, pictures = images_for(data, root, configs, trusted)
    each = member_probabilities(members, images, tta)
    probs, digits = combine(each, method)
    own = [accuracy(p.argmax(axis=1), labels) for p in each]
    scored = [a for a in own if a is not None]
    names = [m.name for m in members]
    settings = {"method": method, "data": data, "rows": len(probs), "tta": tta}
    with ensemble_run(client, names, settings, command, roster.sweeps, roster.skipped) as run_id:
        out = Path(out or f"predictions/ensemble-{run_id}-{data_name(data)}.npy")
        warnings = kaggle_caveat(data, configs)
        more: dict[str, Any] = {
            "run_id": run_id,
            "members": names,
            "skipped": roster.skipped,
            "method": method,
        }
        result = write_predictions(probs, digits, labels, out, pictures, classes, warnings, **more)
        metrics = {
            "accuracy": result.accuracy,
            "members/mean_accuracy": sum(scored) / len(scored) if scored else None,
            "members/best_accuracy": max(scored, default=None),
        }
        log_results(client, run_id, members_table(members, own), metrics, result.files)
    return result

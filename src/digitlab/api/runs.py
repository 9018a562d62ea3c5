"""``digitlab.runs(**filters)``: the store's runs as a pandas DataFrame, newest first."""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.utils.search_utils import SearchUtils

from digitlab.config import CONF_DIR, config_groups
from digitlab.errors import DigitlabError
from digitlab.tracking import store

# Keyword filters that are attributes or tags of a run rather than config groups or params.
ATTRIBUTES = {"status": "attributes.status", "run_name": "attributes.run_name"}
PARENT = 'tags."mlflow.parentRunId"'


def runs(
    tracking_uri: str | None = None,
    experiment_name: str = "digitlab",
    filter_string: str = "",
    max_results: int = 1000,
    **filters: Any,
):
    """One row per run: ``run_id``, ``run_name``, ``status``, ``start_time``, ``end_time``, then
    ``metrics.<name>`` (last value), ``params.<key>`` and ``tags.<key>``, as MLflow names them.

    Filters, combined with AND:
        ``model="mlp"`` (any config group): the run chose that option (tag ``choice.model``);
        ``optimizer__lr=0.1`` (``__`` for ``.``): the param ``optimizer.lr`` is ``0.1``;
        ``status="FINISHED"``, ``run_name="..."``, ``parent=<run id>`` (a sweep's jobs);
        ``filter_string``: any MLflow search expression, e.g. ``"metrics.`test/acc` > 0.9"``.
    ``tracking_uri``: the store (default ``logger.tracking_uri``); ``experiment_name`` as
    ``logger.experiment_name``.
    """
    clauses = [filter_clause(key, value) for key, value in filters.items()]
    clauses += [filter_string] if filter_string else []
    try:  # checked here too, so a bad filter fails even before the experiment has runs
        SearchUtils.parse_search_filter(" and ".join(clauses))
    except MlflowException as e:
        first = str(e.message).splitlines()[0]
        raise DigitlabError(f"MLflow cannot search runs by that filter: {first}") from None
    client = store.open_client(tracking_uri or store.default_tracking_uri())
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return runs_frame([])
    found = client.search_runs(  # one page: MLflow's stores return up to 50 000 runs at once
        [experiment.experiment_id],
        " and ".join(clauses),
        max_results=max_results,
        order_by=["attributes.start_time DESC"],
    )
    return runs_frame(found)


def filter_clause(key: str, value: Any) -> str:
    """One MLflow search clause for a keyword filter (see :func:`runs`)."""
    text = str(value)
    if "'" in text:
        raise DigitlabError(f"{key}={text!r}: a filter value cannot hold a quote (')")
    if key in ATTRIBUTES:
        return f"{ATTRIBUTES[key]} = '{text}'"
    if key == "parent":
        return f"{PARENT} = '{text}'"
    if key in config_groups(CONF_DIR):
        return f"tags.\"choice.{key}\" = '{text}'"
    if "__" in key:
        return f"params.\"{key.replace('__', '.')}\" = '{text}'"
    groups = ", ".join(config_groups(CONF_DIR))
    raise DigitlabError(
        f"runs() has no filter {key}=: use a config group ({groups}), a param with __ for dots "
        "(optimizer__lr=0.1), status=, run_name=, parent=, or filter_string="
    )


def runs_frame(found: list) -> Any:
    """The DataFrame of MLflow ``Run`` objects, built here rather than by ``mlflow.search_runs``,
    which reads the process-wide tracking URI: setting that would leak into the user's kernel."""
    rows = [
        {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            "start_time": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
            "end_time": pd.to_datetime(run.info.end_time, unit="ms", utc=True),
            **{f"metrics.{k}": v for k, v in sorted(run.data.metrics.items())},
            **{f"params.{k}": v for k, v in sorted(run.data.params.items())},
            **{f"tags.{k}": v for k, v in sorted(run.data.tags.items())},
        }
        for run in found
    ]
    columns = ["run_id", "run_name", "status", "start_time", "end_time"]
    return pd.DataFrame(rows, columns=None if rows else columns)

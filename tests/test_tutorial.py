"""docs/tutorial.ipynb runs top to bottom in a real Jupyter kernel (on the tiny synthetic set)
and shows its pictures and numbers; the committed notebook carries no outputs."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import digitlab
from conftest import N_TEST

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def test_the_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    stripped = all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert code and stripped, "run: uv run python .ci/strip_notebooks.py"


@pytest.fixture
def executed(tmp_path, monkeypatch, migrated_db) -> tuple[dict, Path, list[int]]:
    """The notebook executed in a fresh python3 kernel, with a project root of its own (store,
    outputs) and no DIGITLAB_DATA, so it writes and uses the synthetic set; plus the MLflow UI
    processes it left running (stopped here)."""
    root = tmp_path / "project"
    (root / "mlruns").mkdir(parents=True)
    shutil.copy(migrated_db, root / "mlruns" / "mlflow.db")
    monkeypatch.setenv("DIGITLAB_ROOT", str(root))  # the kernel inherits the environment
    monkeypatch.delenv("DIGITLAB_DATA", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute()
    finally:
        left_running = stop_servers_on(root)
    cells = {cell.metadata["tags"][0]: cell for cell in notebook.cells if cell.metadata.get("tags")}
    return cells, root, left_running


def stop_servers_on(root: Path) -> list[int]:
    """Stop MLflow UIs the notebook left running on this test's store (its last cell stops its
    own; this covers a cell that failed before it). Each runs in a session of its own."""
    stopped = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if "mlflow" in command and str(root) in command and entry.name.isdigit():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(int(entry.name)), signal.SIGTERM)
                stopped.append(int(entry.name))
    return stopped


def shown(cell, mime: str) -> list:
    return [out["data"][mime] for out in cell.outputs if mime in out.get("data", {})]


def printed(cell) -> str:
    return "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")


@pytest.mark.slow
def test_the_tutorial_runs_and_shows_its_pictures_and_numbers(executed):
    cells, root, left_running = executed
    assert len(shown(cells["digits"], "image/png")) == 2  # samples and label histogram

    result_line = r"test/acc (\d\.\d{4}), [\d.]+ s, run ([0-9a-f]{32})"
    results = re.findall(result_line, printed(cells["train"]))
    assert len(results) == 2
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    for accuracy, run_id in results:  # what the notebook prints is what its run recorded
        assert accuracy == f"{client.get_run(run_id).data.metrics['test/acc']:.4f}"

    # conv1 before and after training, each with its statistics table
    assert len(shown(cells["filters"], "image/png")) == 2
    tables = shown(cells["filters"], "text/html")
    assert len(tables) == 2 and all(">std<" in t and ">all<" in t for t in tables)

    assert len(shown(cells["predict"], "image/png")) == 1
    assert re.search(r"predicted \[[0-9 ]+\] true \[[0-9 ]+\]", printed(cells["predict"]))

    lines = (root / "outputs" / "submission.csv").read_text().splitlines()
    assert lines[0] == "ImageId,Label" and len(lines) == N_TEST + 1
    assert all(re.fullmatch(rf"{i},[0-9]", line) for i, line in enumerate(lines[1:], start=1))

    (table,) = shown(cells["sweep"], "text/plain")
    assert table.count("FINISHED") == 3 and all(lr in table for lr in ("0.001", "0.003", "0.01"))

    (link,) = shown(cells["ui"], "text/markdown")
    port = int(re.search(r"http://127\.0\.0\.1:(\d+)", link).group(1))
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    assert left_running == []  # the notebook's last cell stopped the UI and all its workers

    runs = digitlab.runs(tracking_uri=f"sqlite:///{root}/mlruns/mlflow.db")
    assert len(runs) == 5 and set(runs.status) == {"FINISHED"}

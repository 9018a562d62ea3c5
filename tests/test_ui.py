"""digitlab-ui serves the project's store on 127.0.0.1 and the run summary names it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from digitlab.tracking import store as tracking
from digitlab.tracking import ui_server


def test_ui_serves_the_logger_store_on_localhost(monkeypatch, tmp_path, migrated_db):
    """``digitlab-ui`` with no argument: MLflow's UI on 127.0.0.1, over the store the logger
    writes to (<project>/mlruns/mlflow.db), its experiments there."""
    import json
    import urllib.request

    from mlflow.tracking import MlflowClient

    from conftest import copy_store, http_server

    monkeypatch.setenv("DIGITLAB_ROOT", str(tmp_path))  # the project's folder
    uri = copy_store(tmp_path, migrated_db)["tracking_uri"]
    MlflowClient(uri).create_experiment("digitlab", artifact_location=str(tmp_path / "a"))

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "digitlab.cli.ui", "--port", str(port)]

    with http_server(command, tmp_path / "ui.log") as url:
        search = urllib.request.Request(
            f"{url}/ajax-api/2.0/mlflow/experiments/search",
            data=json.dumps({"max_results": 10}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(search, timeout=60) as answer:
            names = {e["name"] for e in json.loads(answer.read())["experiments"]}
    assert "digitlab" in names
    # (http_server waited for the server's own line saying it bound 127.0.0.1:<port>)
    said = (tmp_path / "ui.log").read_text()
    assert f"digitlab-ui: MLflow UI for sqlite:///{tmp_path}/mlruns/mlflow.db at {url}" in said


@pytest.fixture
def busy_port():
    """A port a listening socket of the test holds on 127.0.0.1."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def digitlab_ui(root: Path, *args: str) -> subprocess.CompletedProcess:
    """``digitlab-ui args`` in the project folder ``root`` (a UI it started would run until the
    timeout)."""
    env = {**os.environ, "DIGITLAB_ROOT": str(root)}
    command = [sys.executable, "-m", "digitlab.cli.ui", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_ui_on_a_busy_port_says_so_in_one_line_and_announces_nothing(tmp_path, busy_port):
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "mlruns" / "mlflow.db").touch()
    said = digitlab_ui(tmp_path, "--port", str(busy_port))
    assert said.returncode == 1
    assert said.stdout == ""  # no "MLflow UI ... at http://..." for a server that cannot start
    assert said.stderr == (
        f"digitlab-ui: error: port {busy_port} on 127.0.0.1 is already in use (another MLflow "
        "UI, or another program): choose another with --port N\n"
    )


def test_digitlab_ui_on_a_busy_port_raises_one_line(tmp_path, migrated_db, busy_port):
    import digitlab
    from conftest import copy_store
    from digitlab.errors import DigitlabError

    uri = copy_store(tmp_path, migrated_db)["tracking_uri"]
    with pytest.raises(DigitlabError, match=f"^port {busy_port} on 127.0.0.1 is already in use"):
        digitlab.ui(uri, port=busy_port)


def test_the_ui_process_exits_non_zero_when_its_server_fails(tmp_path, migrated_db, busy_port):
    """The server's own start fails (here: the port, taken after any check could see it free):
    ``mlflow ui`` exits 0 whatever its server did; digitlab's UI process does not."""

    from conftest import copy_store

    uri = copy_store(tmp_path, migrated_db)["tracking_uri"]
    failed = subprocess.run(
        ui_server.mlflow_ui_command(uri, port=busy_port),
        capture_output=True,
        text=True,
        env=ui_server.mlflow_ui_environment(dict(os.environ)),
        timeout=300,
    )
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert failed.stderr.splitlines()[-1] == (
        "digitlab-ui: error: the MLflow UI server stopped by itself: its lines above say why"
    )


def test_ui_without_a_store_fails_in_one_line(tmp_path):
    said = digitlab_ui(tmp_path)
    assert said.returncode == 1
    assert said.stderr == (
        f"digitlab-ui: error: no MLflow store at {tmp_path}/mlruns/mlflow.db yet: train a run "
        "first (uv run digitlab), or point --backend-store-uri at an existing store\n"
    )
    assert not (tmp_path / "mlruns").exists()  # not created


def test_digitlab_experiments_are_of_the_training_kind(tmp_path, migrated_db):
    """The experiment kind MLflow 3 records as a tag: set on the experiments digitlab creates,
    and on those an earlier digitlab created without it; a kind the user chose stays."""
    from mlflow.tracking import MlflowClient

    from conftest import copy_store

    uri = copy_store(tmp_path, migrated_db)["tracking_uri"]
    client = MlflowClient(uri)
    new = tracking.get_or_create_experiment(client, "digitlab", str(tmp_path / "artifacts"))
    older = client.create_experiment("older")  # as digitlab made them before
    chosen = client.create_experiment("chosen", tags={tracking.KIND_TAG: "genai_development"})
    for name in ("older", "chosen"):
        tracking.get_or_create_experiment(client, name, None)

    def kind(experiment_id: str) -> str | None:
        return client.get_experiment(experiment_id).tags.get(tracking.KIND_TAG)

    assert kind(new) == kind(older) == "custom_model_development"
    assert kind(chosen) == "genai_development"


def test_run_summary_prints_the_ui_command():
    default = "sqlite:////somewhere/mlruns/mlflow.db"
    assert tracking.ui_command(default, default) == "uv run digitlab-ui"
    other = "sqlite:////tmp/other.db"
    assert tracking.ui_command(other, default) == f"uv run digitlab-ui --backend-store-uri {other}"


def test_ui_module_does_not_import_torch():
    code = "import sys, digitlab.cli.ui; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_ui_process_does_not_print_starlettes_deprecation_of_mlflows_import():
    """MLflow's server imports a module Starlette deprecates: the warning is MLflow's business,
    left out of digitlab-ui's output; the same import without the UI's environment shows it."""
    from digitlab.tracking.ui_server import mlflow_ui_environment

    code = "import mlflow.server.fastapi_app"
    plain = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=plain, timeout=120
    )
    assert "StarletteDeprecationWarning" in shown.stderr  # so the check below can fail
    quiet = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=mlflow_ui_environment(plain),
        timeout=120,
    )
    assert quiet.returncode == 0 and "DeprecationWarning" not in quiet.stderr, quiet.stderr

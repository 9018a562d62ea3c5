"""digitlab-ui serves the project's store on 127.0.0.1 and the run summary names it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from digitlab.cli import ui
from digitlab.tracking import store as tracking


def test_ui_serves_the_logger_store_on_localhost(monkeypatch, tmp_path):
    monkeypatch.setenv("DIGITLAB_ROOT", str(tmp_path))
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "mlruns" / "mlflow.db").touch()
    calls = []
    monkeypatch.setattr(ui.os, "execv", lambda path, argv: calls.append(argv))
    monkeypatch.setattr(ui.os, "environ", dict(ui.os.environ))  # what main sets stays here
    ui.main([])
    (argv,) = calls
    assert argv[1:] == [
        "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{tmp_path}/mlruns/mlflow.db",
        "--host", "127.0.0.1", "--port", "5000", "--workers", "1",
    ]
    # One server process, and none of MLflow's job runner's: they only compete for the cores.
    assert ui.os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    ui.main(["--port", "5123", "--host", "0.0.0.0", "--workers", "3"])
    assert calls[1][-6:] == ["--host", "0.0.0.0", "--port", "5123", "--workers", "3"]


def test_ui_without_a_store_fails_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DIGITLAB_ROOT", str(tmp_path))
    monkeypatch.setattr(ui.os, "execv", lambda *a: pytest.fail("must not start the UI"))
    with pytest.raises(SystemExit) as exit_info:
        ui.main([])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("digitlab-ui: error: no MLflow store at ") and err.count("\n") == 1


def test_run_summary_prints_the_ui_command():
    default = "sqlite:////somewhere/mlruns/mlflow.db"
    assert tracking.ui_command(default, default) == "uv run digitlab-ui"
    other = "sqlite:////tmp/other.db"
    assert tracking.ui_command(other, default) == f"uv run digitlab-ui --backend-store-uri {other}"


def test_ui_module_does_not_import_torch():
    code = "import sys, digitlab.cli.ui; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

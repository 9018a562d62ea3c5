"""The Python API: compose, fit (twice in one process), runs, load, show; errors as exceptions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings

import lightning as L
import mlflow
import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra

import digitlab
from conftest import N_TEST, synthetic_digits
from digitlab.api.fit import unused_folder
from digitlab.errors import DigitlabError, Interrupted


@pytest.fixture
def overrides(fast) -> list[str]:
    """conftest's fast run, as the command-line overrides fit takes."""
    return fast


@pytest.fixture
def uri(store) -> str:
    return store["tracking_uri"]


def test_import_digitlab_stays_light_and_compose_needs_no_torch():
    code = (
        "import sys, digitlab\n"
        "heavy = [m for m in ('torch', 'lightning', 'hydra', 'mlflow') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "cfg = digitlab.compose('model=mlp')\n"
        "assert cfg.model._target_ == 'digitlab.models.MLP', cfg.model\n"
        "assert 'torch' not in sys.modules, 'compose imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compose_takes_command_line_overrides_and_errors_in_one_line():
    cfg = digitlab.compose("model=mlp", "optimizer=adam", "optimizer.lr=0.005")
    assert cfg.model._target_ == "digitlab.models.MLP"
    assert cfg.optimizer.lr == 0.005 and "hydra" not in cfg
    with pytest.raises(DigitlabError) as error:
        digitlab.compose("model=resnet")
    message = str(error.value)
    assert "\n" not in message
    options = "convnet, lenet, lenet5, lenet_small, mlp"
    assert message == (
        "model=resnet is not an option of model: did you mean lenet or lenet5? "
        f"(options: {options})"
    )  # the command line's own line
    with pytest.raises(DigitlabError, match=r"^-m is a command-line flag"):
        digitlab.compose("-m", "seed=1,2")
    assert not GlobalHydra.instance().is_initialized()  # nothing left for the next compose


@pytest.mark.slow
def test_fit_twice_in_one_process_then_runs_load_and_show(overrides, uri):
    sigint_before = signal.getsignal(signal.SIGINT)
    first = digitlab.fit(*overrides, "model=mlp", "optimizer.lr=0.05")
    second = digitlab.fit(*overrides, "model=lenet_small", "figures.enabled=true")
    assert first.run_id != second.run_id
    assert not GlobalHydra.instance().is_initialized()
    assert signal.getsignal(signal.SIGINT) is sigint_before
    assert first.checkpoint.parent != second.checkpoint.parent

    table = digitlab.runs(tracking_uri=uri)
    assert list(table.run_id) == [second.run_id, first.run_id]  # newest first
    assert set(table.status) == {"FINISHED"}
    assert list(table["tags.choice.model"]) == ["lenet_small", "mlp"]
    row = table.set_index("run_id").loc[first.run_id]
    assert row["params.optimizer.lr"] == "0.05"
    assert row["metrics.test/acc"] == pytest.approx(first.metrics["test/acc"])
    mlp_runs = digitlab.runs(tracking_uri=uri, model="mlp", optimizer__lr=0.05, status="FINISHED")
    assert list(mlp_runs.run_id) == [first.run_id]

    # The model fit returns and the one load rebuilds predict what test/acc measured.
    images, labels = synthetic_digits(N_TEST, 1)  # conftest's t10k set
    for model in (first.model, digitlab.load(first.run_id, uri)):
        probs = model.predict(images)
        assert probs.shape == (N_TEST, 10) and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
        accuracy = float((probs.argmax(1) == labels).mean())
        assert accuracy == pytest.approx(first.metrics["test/acc"], abs=1e-6)
    assert first.model.predict(images[0]).shape == (1, 10)

    shown = digitlab.show(second.run_id, "figures/filters/conv1_*", tracking_uri=uri)
    names = sorted(p.name for p in shown)
    assert names == [
        "conv1_final.png",
        "conv1_init.png",
        "conv1_stats_final.json",
        "conv1_stats_init.json",
    ]
    assert all(p.stat().st_size > 0 for p in shown)
    with pytest.raises(DigitlabError, match="has no artifact matching nothing/\\*: it has "):
        digitlab.show(second.run_id, "nothing/*", tracking_uri=uri)


def test_fit_and_register_leave_the_callers_own_mlflow_tracking_uri_alone(overrides, uri):
    """A notebook's MLflow URI (mlflow.set_tracking_uri, what its own fluent runs use) is its
    own: fit and register work on the store they are given without moving it."""
    before = (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI"))
    assert uri not in before
    done = digitlab.fit(
        *overrides, "model=mlp", "logger.log_model=true", "logger.register_as=fitted"
    )
    assert (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")) == before
    registered = digitlab.register(done.run_id, "again", tracking_uri=uri)
    assert registered.version == "1" and registered.run_id == done.run_id
    assert (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")) == before


def test_fit_shows_no_deprecation_notice_of_lightnings_pytree_shim_and_others_still_show(
    overrides,
):
    """The command line leaves dependencies' deprecation notices out; digitlab.fit leaves out
    the one every fit would show (Lightning's pytree shim), and only that one."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        digitlab.fit(*overrides, "model=mlp")
        warnings.warn("a FutureWarning of the user's own", FutureWarning, stacklevel=1)
    shown = [str(w.message) for w in caught]
    assert not [m for m in shown if "LeafSpec" in m], shown
    assert "a FutureWarning of the user's own" in shown


def test_bad_input_raises_the_command_lines_one_line_error_and_leaves_no_run(overrides, uri):
    with pytest.raises(DigitlabError) as error:
        digitlab.fit(*overrides, "optimizer.lr=-0.1")
    assert str(error.value) == "optimizer.lr=-0.1 is invalid: it must be a number > 0, e.g. 0.1"
    assert digitlab.runs(tracking_uri=uri).empty
    for call in (digitlab.load, digitlab.show):
        with pytest.raises(DigitlabError, match="^no MLflow run 0123 in this store: check the id"):
            call("0123", tracking_uri=uri)
    with pytest.raises(DigitlabError, match="^runs\\(\\) has no filter colour="):
        digitlab.runs(tracking_uri=uri, colour="red")
    with pytest.raises(DigitlabError, match="^MLflow cannot search runs by that filter: "):
        digitlab.runs(tracking_uri=uri, filter_string="params.optimizer.lr = 0.1")


class SigintAfterFirstEpoch(L.Callback):
    """Jupyter's Interrupt as the kernel gets it: SIGINT to its own process (here once the first
    epoch is checkpointed)."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)


def test_interrupted_fit_leaves_a_killed_run_and_the_next_fit_works(overrides, uri):
    before = signal.getsignal(signal.SIGINT)  # Python's own; ignored in a shell's background job
    with pytest.raises(Interrupted, match="is KILLED; last checkpoint .* continue with: resume="):
        digitlab.fit(
            *overrides, "model=mlp", "trainer.max_epochs=3", callbacks=[SigintAfterFirstEpoch()]
        )
    killed = digitlab.runs(tracking_uri=uri)
    assert list(killed.status) == ["KILLED"]  # nothing left RUNNING
    assert signal.getsignal(signal.SIGINT) == before  # restored, not left as fit's handler
    again = digitlab.fit(*overrides, "model=mlp")
    assert digitlab.runs(tracking_uri=uri).set_index("run_id").status[again.run_id] == "FINISHED"


def test_predict_refuses_images_it_cannot_read():
    model = digitlab.Model(net=None, config={})  # the images are refused before either is used
    with pytest.raises(DigitlabError, match=r"shape \(2, 32, 32\) cannot be predicted"):
        model.predict(np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(DigitlabError, match=r"pixels range -1..3: send raw values 0..255"):
        model.predict(np.full((1, 28, 28), 3.0) - np.eye(28)[None] * 4)


def test_a_second_fit_in_the_same_second_gets_its_own_job_folder(tmp_path):
    folder = tmp_path / "outputs" / "2026-11-22" / "10-00-00"
    assert unused_folder(folder) == folder
    folder.mkdir(parents=True)
    assert unused_folder(folder) == folder.with_name("10-00-00-2")
    folder.with_name("10-00-00-2").mkdir()
    assert unused_folder(folder) == folder.with_name("10-00-00-3")


def test_ui_refuses_a_store_that_does_not_exist(tmp_path):
    missing = tmp_path / "mlruns" / "mlflow.db"
    with pytest.raises(DigitlabError, match=f"^no MLflow store at {missing} yet: train a run"):
        digitlab.ui(tracking_uri=f"sqlite:///{missing}")
    assert not missing.exists()  # the UI must not create it (see digitlab.cli.ui)


def test_a_misspelt_word_is_refused_by_compose_and_fit_as_by_the_command_line():
    """``digitlab.fit("experiment=fastt")`` must not train the default model."""
    for overrides, said in (
        (["experiment=fastt"], "fast"),
        (["optimizer.lrr=0.1"], "optimizer.lr"),
    ):
        for door in (digitlab.compose, digitlab.fit):
            with pytest.raises(DigitlabError, match=said) as refused:
                door(*overrides)
            assert "\n" not in str(refused.value)


def test_predict_on_no_images_gives_no_rows():
    import torch

    model = digitlab.Model(
        net=torch.nn.Flatten(), config={"data": {"scale": 255, "mean": 0, "std": 1}, "model": {}}
    )
    assert model.predict(np.zeros((0, 28, 28), np.uint8)).shape[0] == 0


def test_predict_and_register_refuse_bad_input_in_one_line(uri):
    for call, said in (
        (lambda: digitlab.predict(), "give a run or a checkpoint"),
        (lambda: digitlab.predict(checkpoint="x.ckpt", method="median"), "'median' is unknown"),
        (lambda: digitlab.register("0" * 32, "digits", tracking_uri=uri), "no MLflow run 0000"),
    ):
        with pytest.raises(DigitlabError, match=said) as refused:
            call()
        assert "\n" not in str(refused.value)

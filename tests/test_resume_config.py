"""``resume=<id>`` continues the run as it was trained (its stored config), whatever this command's
defaults; an override that changes what was trained is refused in one line."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

import digitlab
from conftest import copy_store, fast_config
from digitlab.config.resume import resumed_config
from digitlab.errors import DigitlabError
from digitlab.training.run import train


@pytest.fixture
def composed(data_root, store):
    def compose(*overrides: str):
        return fast_config(data_root, store, *overrides)

    return compose


def stored(compose, *overrides: str) -> dict:
    return OmegaConf.to_container(compose(*overrides), resolve=True)


def test_the_stored_config_is_the_base_and_this_commands_place_and_device_win(composed):
    was = stored(composed, "model=mlp", "optimizer=adam", "trainer.max_epochs=2")
    now = composed("resume=abc", "trainer.accelerator=cpu")
    merged = resumed_config(
        now,
        {**was, "logger": {"tracking_uri": "elsewhere"}, "trusted_targets": ["evil"]},
        ["resume=abc", "trainer.accelerator=cpu"],
        "abc",
    )
    assert merged.model._target_ == "digitlab.models.MLP" and "channels" not in merged.model
    assert merged.optimizer._target_ == "torch.optim.Adam"
    assert merged.trainer.max_epochs == 2  # the run's own length
    assert merged.logger.tracking_uri == now.logger.tracking_uri  # this command's store
    assert list(merged.trusted_targets) == []  # a stored config never trusts code


@pytest.mark.parametrize(
    "override",
    [
        "model=lenet",
        "model.hidden=[32]",
        "optimizer.lr=0.5",
        "seed=7",
        "optimizer=sgd",
        "experiment=fast",
    ],
)
def test_an_override_that_changes_what_was_trained_is_refused(composed, override):
    was = stored(composed, "model=mlp", "optimizer=adam")
    with pytest.raises(
        DigitlabError,
        match="resume=abc continues the run as it was trained, "
        r"and .* changes that \(",
    ) as refused:
        resumed_config(composed("resume=abc", override), was, ["resume=abc", override], "abc")
    assert "\n" not in str(refused.value)


def test_the_same_value_again_and_a_longer_run_without_a_schedule_are_accepted(composed):
    was = stored(composed, "model=mlp", "trainer.max_epochs=2")
    merged = resumed_config(
        composed("model=mlp", "trainer.max_epochs=4"),
        was,
        ["model=mlp", "trainer.max_epochs=4"],
        "abc",
    )
    assert merged.trainer.max_epochs == 4


def test_a_longer_run_under_a_schedule_that_spans_the_run_is_one_line(composed):
    was = stored(composed, "scheduler=onecycle", "trainer.max_epochs=2")
    with pytest.raises(
        DigitlabError,
        match=r"trainer.max_epochs=4 cannot extend a run whose "
        r"learning-rate schedule \(OneCycleLR\) spans its 2 epochs",
    ):
        resumed_config(
            composed("scheduler=onecycle", "trainer.max_epochs=4"),
            was,
            ["trainer.max_epochs=4"],
            "abc",
        )


def test_resume_with_the_run_id_alone_continues_a_run_trained_with_overrides(
    data_root, migrated_db, tmp_path, monkeypatch
):
    """The run was an MLP with Adam; ``resume=<id>`` alone (beside where the store and data
    are) continues it as such, instead of loading its weights into the default LeNet. Its
    last.ckpt is found in its job folder under the project's outputs/."""
    monkeypatch.setenv("DIGITLAB_ROOT", str(tmp_path))
    store = copy_store(tmp_path, migrated_db)
    cfg = fast_config(
        data_root,
        store,
        "model=mlp",
        "optimizer=adam",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=1",
    )
    first = train(cfg, output_dir=tmp_path / "outputs" / "first", choices={"model": "mlp"})
    client = MlflowClient(store["tracking_uri"])
    client.set_terminated(first["run_id"], "KILLED")
    resumed = digitlab.fit(
        f"resume={first['run_id']}",
        f"data.root={data_root}",
        f"logger.tracking_uri={store['tracking_uri']}",
        f"logger.artifact_location={store['artifact_location']}",
        "trainer.enable_progress_bar=false",
    )
    assert resumed.run_id == first["run_id"]
    assert type(resumed.model.net).__name__ == "MLP"
    run = client.get_run(first["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["choice.model"] == "mlp"


@pytest.mark.slow
def test_the_command_printed_after_ctrl_c_alone_continues_the_run(data_root, migrated_db, tmp_path):
    """``continue with: resume=<id>`` is runnable as printed (beside where the store is), for a
    run started with overrides; an override of what was trained is one line, no traceback."""
    import warm

    store = copy_store(tmp_path, migrated_db)
    place = [
        f"data.root={data_root}",
        f"logger.tracking_uri={store['tracking_uri']}",
        f"logger.artifact_location={store['artifact_location']}",
    ]
    cfg = fast_config(
        data_root,
        store,
        "model=mlp",
        "optimizer=adam",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=1",
    )
    first = train(cfg, output_dir=tmp_path / "outputs" / "first", choices={"model": "mlp"})
    MlflowClient(store["tracking_uri"]).set_terminated(first["run_id"], "KILLED")
    refused = warm.run(
        "digitlab",
        f"resume={first['run_id']}",
        *place,
        "model=lenet",
        f"hydra.run.dir={tmp_path / 'refused'}",
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("digitlab: error: ")]
    assert f"resume={first['run_id']} continues the run as it was trained, and model" in line
    resumed = warm.run(
        "digitlab", f"resume={first['run_id']}", *place, f"hydra.run.dir={tmp_path / 'resumed'}"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Downloading artifacts" not in resumed.stderr  # no progress bar for its config
    assert f"MLflow run {first['run_id']}" in resumed.stdout
    assert MlflowClient(store["tracking_uri"]).get_run(first["run_id"]).info.status == "FINISHED"

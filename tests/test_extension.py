"""A user extends digitlab without forking it: their own network and callback, in their own
package, with YAML in their own config dir, train, sweep and predict."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import warm

NETWORK = """
from torch import nn


class TinyNet(nn.Module):
    \"\"\"A one-hidden-layer network that is not digitlab's.\"\"\"

    def __init__(self, hidden: int = 16, input_size: int = 28) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(input_size * input_size, hidden),
                                  nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x):
        return self.body(x)
"""

CALLBACK = """
from pathlib import Path

import lightning as L


class CountEpochs(L.Callback):
    \"\"\"Writes how many training epochs ended, so a test can see it ran.\"\"\"

    def __init__(self, out: str) -> None:
        self.out, self.epochs = Path(out), 0

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs += 1
        self.out.write_text(str(self.epochs))
"""

MODEL_YAML = """\
# A user's own network: conf/model/tiny.yaml in their config dir.
_target_: usernets.tiny.TinyNet
hidden: 16
input_size: 28
"""

CALLBACKS_YAML = """\
# digitlab's callbacks plus the user's own.
defaults:
  - default
  - _self_
count_epochs:
  _target_: usernets.callbacks.CountEpochs
  out: ${oc.env:EPOCHS_FILE}
"""


@pytest.fixture
def user_project(tmp_path, data_root, store):
    """A user's package and config dir, and the environment and overrides to run digitlab."""
    package = tmp_path / "src" / "usernets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tiny.py").write_text(NETWORK)
    (package / "callbacks.py").write_text(CALLBACK)
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "callbacks").mkdir()
    (conf / "model" / "tiny.yaml").write_text(MODEL_YAML)
    (conf / "callbacks" / "mine.yaml").write_text(CALLBACKS_YAML)
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path / "src"),
        "DIGITLAB_DATA": str(data_root),
        "EPOCHS_FILE": str(tmp_path / "epochs.txt"),
    }
    overrides = [
        "model=tiny",
        "callbacks=mine",
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "data.val_size=40",
        "data.batch_size=32",
        "figures=off",
        f"logger.tracking_uri={store['tracking_uri']}",
        f"logger.artifact_location={store['artifact_location']}",
    ]
    return {"root": tmp_path, "conf": conf, "env": env, "overrides": overrides, "store": store}


def digitlab(project, *args: str, search_path: bool = False) -> subprocess.CompletedProcess:
    """``digitlab`` with the user's config dir, by ``--config-dir`` or by ``hydra.searchpath``
    (forked warm, tests/warm.py: the user's package is found through $PYTHONPATH as in a new
    interpreter, and is imported only by the command)."""
    where = (
        [f"hydra.searchpath=[file://{project['conf']}]"]
        if search_path
        else ["--config-dir", str(project["conf"])]
    )
    return warm.run("digitlab", *where, *args, env=project["env"], timeout=600)


@pytest.mark.slow
def test_a_users_network_and_callback_train_sweep_and_predict(user_project):
    root, overrides = user_project["root"], user_project["overrides"]
    client = MlflowClient(user_project["store"]["tracking_uri"])

    # Not trusted yet: one line naming the fix, nothing trained, no run left behind.
    refused = digitlab(
        user_project, *overrides, f"hydra.run.dir={root / 'refused'}", search_path=True
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        line for line in refused.stderr.strip().splitlines() if line.startswith("digitlab: error:")
    ], refused.stderr
    assert "model._target_=usernets.tiny.TinyNet is not allowed" in refused.stderr
    assert "trusted_targets=[mypkg]" in refused.stderr
    assert not (root / "epochs.txt").exists()

    trusted = [*overrides, "trusted_targets=[usernets]"]
    done = digitlab(user_project, *trusted, f"hydra.run.dir={root / 'job'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (root / "epochs.txt").read_text() == "2"  # the user's callback ran every epoch
    (run,) = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["model._target_"] == "usernets.tiny.TinyNet"
    assert run.data.tags["choice.model"] == "tiny" and run.data.metrics["test/acc"] > 0.3

    swept = digitlab(user_project, "-m", *trusted, "seed=1,2", f"hydra.sweep.dir={root / 'sweep'}")
    assert swept.returncode == 0, swept.stderr[-3000:]
    runs = client.search_runs([run.info.experiment_id], "tags.choice.model = 'tiny'")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert sorted(r.data.params["seed"] for r in children) == ["1", "2"]
    assert {r.info.status for r in children} == {"FINISHED"}

    checkpoint = root / "job" / "checkpoints" / "best.ckpt"
    predict = [
        "digitlab.cli.predict",
        "--checkpoint",
        str(checkpoint),
        "--data",
        "mnist",
        "--out",
        str(root / "probs.npy"),
    ]
    untrusted = warm.run(*predict, env=user_project["env"])
    assert untrusted.returncode == 1 and "not trusted code" in untrusted.stderr
    predicted = warm.run(*predict, "--trust", "usernets", env=user_project["env"])
    assert predicted.returncode == 0, predicted.stderr
    assert "80 probabilities (N, 10)" in predicted.stdout and "accuracy" in predicted.stdout
    assert Path(root / "probs.npy").is_file()


def test_callbacks_none_and_callbacks_passed_to_train(make_cfg, tmp_path):
    """callbacks=none drops the group's callbacks; train(callbacks=...) adds the caller's."""
    import lightning as L

    from digitlab.training.run import train

    class Seen(L.Callback):
        def __init__(self):
            self.epochs = 0

        def on_train_epoch_end(self, trainer, pl_module):
            self.epochs += 1

    seen = Seen()
    result = train(
        make_cfg("model=mlp", "callbacks=none", "trainer.max_epochs=2"),
        output_dir=tmp_path,
        callbacks=[seen],
    )
    assert seen.epochs == 2
    assert "train/samples_per_sec" not in result["metrics"]  # EpochThroughput was dropped
    with_group = train(make_cfg("model=mlp"), output_dir=tmp_path / "b")
    assert with_group["metrics"]["train/samples_per_sec"] > 0


def test_a_network_is_checked_against_its_own_arguments(tmp_path, monkeypatch):
    """Each network means what its own constructor says by an argument's name: the user's
    TinyNet takes ``hidden: 64`` (a width, where LeNet's is a list), and an argument a network
    lacks (the user's, read from its source; digitlab's, from the schema) is one line naming the
    closest ones, before torch is imported."""
    import sys

    from omegaconf import OmegaConf

    import digitlab
    from digitlab.config.spec import check_config
    from digitlab.errors import DigitlabError

    (tmp_path / "usernets").mkdir()
    (tmp_path / "usernets" / "__init__.py").write_text("")
    (tmp_path / "usernets" / "tiny.py").write_text(NETWORK)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = digitlab.compose("model=mlp", "trusted_targets=[usernets]")
    tiny = {"_target_": "usernets.tiny.TinyNet", "hidden": 64, "input_size": 28}
    for model, refused in (
        (tiny, None),
        (
            {**tiny, "hiden": 32},
            "model.hiden: usernets.tiny.TinyNet takes no argument hiden: did you mean "
            "model.hidden? (usernets.tiny.TinyNet's arguments: hidden, input_size)",
        ),
        (
            {"_target_": "digitlab.models.MLP", "hidden": [8], "kernel_size": 3},
            "model.kernel_size: digitlab.models.MLP takes no argument kernel_size: ",
        ),
    ):
        cfg.model = OmegaConf.create(model)
        if refused is None:
            check_config(cfg)
            continue
        with pytest.raises(DigitlabError) as e:
            check_config(cfg)
        assert str(e.value).startswith(refused), e.value
    assert "usernets.tiny" not in sys.modules  # its source was read, the module not imported

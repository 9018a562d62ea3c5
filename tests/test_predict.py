"""Predictions from a run or a checkpoint: probabilities, the Kaggle submission, bad checkpoints."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

import warm
from conftest import N_TEST, REAL_DATA, copy_store, fast_config
from digitlab.errors import DigitlabError
from digitlab.jobs.predict import predict
from digitlab.training.run import train


@pytest.fixture(scope="module")
def trained(data_root, migrated_db, tmp_path_factory):
    """A tiny LeNet trained once on the tiny Kaggle set for every test here: (result, cfg)."""
    folder = tmp_path_factory.mktemp("predict")
    cfg = fast_config(
        data_root,
        copy_store(folder, migrated_db),
        "data=kaggle",
        "model=lenet_small",
        "trainer.max_epochs=2",
    )
    return train(cfg, output_dir=folder / "job", choices={"data": "kaggle"}), cfg


def test_kaggle_submission_from_a_run_is_valid_and_logged(trained, data_root, tmp_path):
    result, cfg = trained
    out = predict(
        run_id=result["run_id"],
        data="kaggle",
        root=data_root,
        out=tmp_path / "probs.npy",
        tracking_uri=cfg.logger.tracking_uri,
    )
    probs = np.load(out.probabilities)
    assert probs.shape == (N_TEST, 10) and probs.dtype == np.float32
    assert np.allclose(probs.sum(1), 1, atol=1e-5)

    lines = out.submission.read_text().splitlines()
    assert lines[0] == "ImageId,Label" and len(lines) == N_TEST + 1
    ids, labels = zip(*(map(int, line.split(",")) for line in lines[1:]), strict=True)
    assert list(ids) == list(range(1, N_TEST + 1))
    assert list(labels) == probs.argmax(1).tolist()
    # Recorded as a run of its own, linked to the training run, which is left as it was; a
    # second prediction is another run, and the first one's files stay.
    client = MlflowClient(cfg.logger.tracking_uri)
    assert client.list_artifacts(result["run_id"], "predictions") == []
    again = predict(
        run_id=result["run_id"],
        data="kaggle",
        root=data_root,
        out=tmp_path / "again.npy",
        tracking_uri=cfg.logger.tracking_uri,
    )
    assert again.run_id != out.run_id
    for recorded, name in ((out, "probs.npy"), (again, "again.npy")):
        run = client.get_run(recorded.run_id)
        assert run.data.tags["digitlab.predicted_from"] == result["run_id"]
        assert client.get_experiment(run.info.experiment_id).name == "predictions"
        logged = {a.path for a in client.list_artifacts(recorded.run_id, "predictions")}
        assert logged == {f"predictions/{name}", "predictions/submission.csv"}


def test_checkpoint_on_labelled_mnist_writes_csv_probabilities(trained, data_root, tmp_path):
    result, _ = trained
    out = predict(
        checkpoint=result["best_checkpoint"], data="mnist", root=data_root, out=tmp_path / "p.csv"
    )
    from digitlab.data.sources import load_mnist

    table = np.loadtxt(out.probabilities, delimiter=",", skiprows=1)
    assert table.shape == (N_TEST, 10)
    labels = np.asarray(load_mnist(data_root, download=False).test_labels)
    assert out.submission is None
    assert out.accuracy == pytest.approx((table.argmax(1) == labels).mean())


def test_tta_averages_each_images_fixed_moves_and_is_recorded(trained, data_root, tmp_path):
    result, cfg = trained
    plain = predict(
        checkpoint=result["best_checkpoint"], data="mnist", root=data_root, out=tmp_path / "p.npy"
    )
    tta = predict(
        run_id=result["run_id"],
        data="mnist",
        root=data_root,
        out=tmp_path / "tta.npy",
        tracking_uri=cfg.logger.tracking_uri,
        tta=True,
    )
    plain_probs, tta_probs = np.load(plain.probabilities), np.load(tta.probabilities)
    assert np.allclose(tta_probs.sum(1), 1, atol=1e-5)
    assert not np.allclose(tta_probs, plain_probs, atol=1e-4)  # the moves changed something
    run = MlflowClient(cfg.logger.tracking_uri).get_run(tta.run_id)
    assert run.data.params["predict.tta"] == "True"
    assert "--tta" in run.data.tags["digitlab.command"].split()


def _corrupt(checkpoint: dict, path) -> None:
    torch.save(checkpoint, path)
    path.write_bytes(path.read_bytes()[:1000])


def _pickled(checkpoint: dict, path) -> None:
    import argparse

    torch.save({**checkpoint, "hyper_parameters": argparse.Namespace(lr=0.1)}, path)


def _other_architecture(checkpoint: dict, path) -> None:
    checkpoint["hyper_parameters"]["config"]["model"]["channels"] = [7, 9]
    torch.save(checkpoint, path)


# docs/errors.md: "The checkpoint rows apply equally to digitlab-predict" -- through its command.
BAD_CHECKPOINTS = {
    "corrupt": (_corrupt, "is not a readable checkpoint: it is corrupt or truncated"),
    "pickled objects": (
        _pickled,
        "holds Python objects, not only tensors and plain values; refused",
    ),
    "another architecture": (
        _other_architecture,
        "holds weights of another architecture than the LeNet",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_a_bad_checkpoint_fails_predict_in_one_line(trained, tmp_path, capsys, case):
    """The command's own entry point (its argument parsing and error printing), in this process."""
    from digitlab.cli.predict import main

    spoil, message = BAD_CHECKPOINTS[case]
    result, _ = trained
    spoil(torch.load(result["best_checkpoint"], weights_only=True), tmp_path / "bad.ckpt")
    with pytest.raises(SystemExit) as exited:
        main(
            [
                "--checkpoint",
                str(tmp_path / "bad.ckpt"),
                "--data",
                "mnist",
                "--out",
                str(tmp_path / "p.npy"),
            ]
        )
    stderr = capsys.readouterr().err
    assert exited.value.code == 1, stderr
    assert stderr.startswith("digitlab: error: ") and stderr.count("\n") == 1, stderr
    assert message in stderr and str(tmp_path / "bad.ckpt") in stderr
    assert not (tmp_path / "p.npy").exists()


@pytest.mark.slow
@pytest.mark.real_data
def test_real_kaggle_test_csv_gives_28000_rows(trained, tmp_path):
    result, _ = trained
    out = predict(
        checkpoint=result["best_checkpoint"], data="kaggle", root=REAL_DATA, out=tmp_path / "p.npy"
    )
    lines = out.submission.read_text().splitlines()
    assert len(lines) == 28_001 and lines[1].startswith("1,") and lines[-1].startswith("28000,")


MARKER_MODULE = """
import os
from pathlib import Path

import torch


def build(**settings):
    Path(os.environ["DIGITLAB_TEST_MARKER"]).write_text("called")  # proof that it ran
    return torch.nn.Flatten()
"""


@pytest.mark.slow
def test_a_crafted_checkpoint_naming_other_code_is_refused_and_never_called(trained, tmp_path):
    """A .ckpt whose saved config names code outside the allow-list: predict refuses it in one
    line, and the code is never imported, let alone called; trusting the module runs it."""
    result, _ = trained
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "crafted_marker.py").write_text(MARKER_MODULE)
    checkpoint = torch.load(result["best_checkpoint"], weights_only=True)
    checkpoint["hyper_parameters"]["config"]["model"] = {"_target_": "crafted_marker.build"}
    # The checkpoint trusting itself must not count: only the user's own --trust does.
    checkpoint["hyper_parameters"]["config"]["trusted_targets"] = ["crafted_marker"]
    torch.save(checkpoint, tmp_path / "crafted.ckpt")
    marker = tmp_path / "marker.txt"
    env = {**os.environ, "PYTHONPATH": str(package), "DIGITLAB_TEST_MARKER": str(marker)}
    command = [
        "digitlab.cli.predict",
        "--checkpoint",
        str(tmp_path / "crafted.ckpt"),
        "--data",
        "mnist",
        "--out",
        str(tmp_path / "p.npy"),
    ]
    refused = warm.run(*command, env=env)
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.startswith("digitlab: error: ") and refused.stderr.count("\n") == 1
    assert "model._target_=crafted_marker.build, which is not trusted" in refused.stderr
    assert not marker.exists()
    # The same file with the user's explicit trust does run the code (so the test above could fail).
    trusting = warm.run(*command, "--trust", "crafted_marker", env=env)
    assert marker.read_text() == "called", trusting.stderr


def test_an_out_path_without_suffix_gets_npy_and_the_returned_path_is_the_file(tmp_path):
    """np.save appends .npy itself; the path reported (and logged by an ensemble) must exist."""
    import numpy as np

    from digitlab.jobs.outputs import write_predictions

    probs = np.full((3, 10), 0.1)
    result = write_predictions(
        probs, np.array([1, 2, 3]), np.array([1, 2, 0]), tmp_path / "sub" / "out"
    )
    assert result.probabilities == tmp_path / "sub" / "out.npy"
    assert np.array_equal(np.load(result.probabilities), probs)
    assert result.accuracy == 2 / 3


def test_an_idx_images_file_is_predicted_with_the_labels_beside_it(trained, data_root, tmp_path):
    """--data takes an IDX images file (.gz or not): the labels file MNIST's naming puts beside
    it scores the prediction; without one, the images are unlabelled (a submission.csv)."""
    import gzip
    import shutil

    result, _ = trained
    checkpoint = result["best_checkpoint"]
    raw = data_root / "MNIST" / "raw"
    as_mnist = predict(checkpoint=checkpoint, data="mnist", root=data_root, out=tmp_path / "m.npy")
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(raw / name, tmp_path / name)
    scored = predict(
        checkpoint=checkpoint, data=str(tmp_path / "t10k-images-idx3-ubyte.gz"), out=tmp_path / "i"
    )
    assert scored.n == N_TEST and scored.accuracy == as_mnist.accuracy
    assert np.array_equal(np.load(scored.probabilities), np.load(as_mnist.probabilities))
    alone = tmp_path / "alone" / "digits-idx3-ubyte"
    alone.parent.mkdir()
    alone.write_bytes(gzip.decompress((raw / "t10k-images-idx3-ubyte.gz").read_bytes()))
    unlabelled = predict(checkpoint=checkpoint, data=str(alone), out=tmp_path / "u.npy")
    assert unlabelled.n == N_TEST and unlabelled.accuracy is None
    assert len(unlabelled.submission.read_text().splitlines()) == N_TEST + 1
    (tmp_path / "notes.txt").write_text("not IDX")
    with pytest.raises(DigitlabError, match="neither a data set .* an IDX images file"):
        predict(checkpoint=checkpoint, data=str(tmp_path / "notes.txt"), out=tmp_path / "x.npy")


def test_a_kaggle_submission_of_a_network_trained_on_mnists_files_says_what_its_score_means(
    trained, data_root, tmp_path
):
    """Kaggle's test images are MNIST images: a network trained on MNIST's files has seen most
    of them, and its leaderboard score would mean nothing. One warning line says so."""
    from digitlab.cli.predict import summary

    result, _ = trained
    on_kaggle = predict(
        checkpoint=result["best_checkpoint"], data="kaggle", root=data_root, out=tmp_path / "k"
    )
    assert on_kaggle.warnings == [] and "warning" not in "\n".join(summary(on_kaggle))
    checkpoint = torch.load(result["best_checkpoint"], weights_only=True)
    checkpoint["hyper_parameters"]["config"]["data"]["source"] = {
        "_target_": "digitlab.data.sources.load_mnist",
        "_partial_": True,
        "download": True,
    }
    torch.save(checkpoint, tmp_path / "mnist.ckpt")
    on_mnist = predict(
        checkpoint=tmp_path / "mnist.ckpt", data="kaggle", root=data_root, out=tmp_path / "m"
    )
    assert on_mnist.submission is not None and len(on_mnist.warnings) == 1
    (warning,) = [line for line in summary(on_mnist) if "warning" in line]
    assert "trained on MNIST's files, and Kaggle's test images are MNIST images" in warning
    mnist_scored = predict(
        checkpoint=tmp_path / "mnist.ckpt", data="mnist", root=data_root, out=tmp_path / "s"
    )
    assert mnist_scored.warnings == []


def test_a_scored_prediction_prints_its_accuracy_with_its_standard_error(tmp_path):
    from digitlab.cli.predict import summary
    from digitlab.jobs.outputs import Prediction

    scored = Prediction(tmp_path / "p.npy", None, None, accuracy=0.99, n=10_000)
    (line,) = [line for line in summary(scored) if "accuracy" in line]
    assert line.endswith("0.9900 ± 0.0010 (standard error over 10,000 rows)"), line
    unscored = Prediction(tmp_path / "p.npy", tmp_path / "submission.csv", None, None, n=3)
    assert not [line for line in summary(unscored) if "accuracy" in line]

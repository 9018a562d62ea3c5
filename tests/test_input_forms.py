"""Digits as people hold them: scaled to 0..1, dark on light, pictures of any size. Each form is
recognised and made MNIST-like, by every door (Model.predict, the pyfunc model, /invocations,
digitlab-predict), or refused in one line: never answered as if it were something else."""

from __future__ import annotations

import json
import threading
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REAL_DATA, copy_store, fast_config, synthetic_digits
from digitlab.errors import DigitlabError
from digitlab.serving.model import UNSURE_BELOW, BadInput, as_pixels
from digitlab.training.run import train


def forms(images: np.ndarray) -> dict[str, np.ndarray]:
    """The same uint8 MNIST digits written four ways."""
    scaled = images.astype(np.float32) / 255
    return {
        "0..255": images,
        "0..1": scaled,
        "dark on light": 255 - images,
        "dark on light, 0..1": 1 - scaled,
    }


def digits(n: int = 20) -> np.ndarray:
    images, _ = synthetic_digits(n, seed=3)
    return np.asarray(images, dtype=np.uint8)


@pytest.mark.parametrize("form", ["0..1", "dark on light", "dark on light, 0..1"])
def test_every_form_of_a_digit_becomes_mnists(form):
    images = digits()
    assert np.array_equal(as_pixels(forms(images)[form]), images)


def test_a_blank_image_stays_blank_and_other_scales_are_refused():
    assert not as_pixels(np.zeros((1, 28, 28), np.float32)).any()
    for bad, reason in (
        (digits()[:1] - 128.0, "range -128"),
        (digits()[:1] * 2.0, "not normalised"),
    ):
        with pytest.raises(BadInput, match=reason):
            as_pixels(bad)


@pytest.fixture(scope="module")
def model(data_root, migrated_db, tmp_path_factory):
    """A tiny MLP trained once, its model logged: (result, cfg)."""
    folder = tmp_path_factory.mktemp("forms")
    cfg = fast_config(
        data_root,
        copy_store(folder, migrated_db),
        "model=mlp",
        "logger.log_model=true",
        "trainer.max_epochs=2",
    )
    return train(cfg, output_dir=folder / "job"), cfg


def test_model_predict_the_pyfunc_model_and_invocations_agree_on_every_form(model):
    import mlflow

    from digitlab.api.model import load
    from digitlab.serving.server import make_server
    from digitlab.tracking.store import open_client

    result, cfg = model
    images = digits()
    api = load(result["run_id"], tracking_uri=cfg.logger.tracking_uri)
    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    uri = f"runs:/{result['run_id']}/model"
    pyfunc = mlflow.pyfunc.load_model(uri)
    server = make_server(open_client(cfg.logger.tracking_uri), uri, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        expected = api.predict(images)
        for form, pixels in forms(images).items():
            np.testing.assert_allclose(api.predict(pixels), expected, atol=1e-6, err_msg=form)
            np.testing.assert_allclose(api.predict(torch.from_numpy(pixels)), expected, atol=1e-6)
            if pixels.dtype == np.uint8:
                np.testing.assert_allclose(
                    pyfunc.predict(pixels)["probabilities"], expected, atol=1e-6, err_msg=form
                )
            else:  # the model's signature takes uint8: MLflow refuses floats, never misreads them
                with pytest.raises(mlflow.exceptions.MlflowException, match="dtype"):
                    pyfunc.predict(pixels)
            body = json.dumps({"inputs": pixels.tolist()}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{server.server_address[1]}/invocations",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as answer:
                served = json.loads(answer.read())["predictions"]
            np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5, err_msg=form)
            # Every door gives each digit its confidence, and marks it unsure below the floor.
            np.testing.assert_allclose(served["confidence"], expected.max(1), atol=1e-5)
            assert served["unsure"] == (expected.max(1) < UNSURE_BELOW).tolist()
        answer = pyfunc.predict(images)
        classified = api.classify(images)
        for verdict in (answer, classified):
            np.testing.assert_allclose(verdict["confidence"], expected.max(1), atol=1e-6)
            assert np.array_equal(verdict["unsure"], expected.max(1) < UNSURE_BELOW)
            assert np.array_equal(verdict["digit"], expected.argmax(1))
    finally:
        server.shutdown()
        server.server_close()


def save_pictures(images: np.ndarray, folder, sides=(28, 56, 200), suffix=".png") -> None:
    """Each digit as a dark-on-light picture, at one of ``sides`` in turn."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        side = sides[i % len(sides)]
        picture = Image.fromarray(255 - image).resize((side, side), Image.BILINEAR)
        picture.save(folder / f"{i:04d}{suffix}")


def test_pictures_a_folder_a_glob_and_bad_files(model, tmp_path):
    from digitlab.jobs.predict import predict

    result, _ = model
    images = digits(6)
    save_pictures(images[:3], tmp_path / "pics")
    save_pictures(images[3:], tmp_path / "pics", suffix=".jpg")
    out = predict(
        checkpoint=result["best_checkpoint"], data=str(tmp_path / "pics"), out=tmp_path / "p.npy"
    )
    rows = out.digits.read_text().splitlines()
    assert rows[0] == "file,digit,confidence,unsure,error" and len(rows) == 7
    assert rows[1].startswith(str(tmp_path / "pics" / "0000.jpg")) and out.submission is None
    from digitlab.jobs.inputs import data_name

    assert data_name(str(tmp_path / "pics" / "*.png")) == "pics"  # never a "*" in a file name
    assert data_name(str(tmp_path / "pics")) == "pics" and data_name("mnist") == "mnist"
    globbed = predict(
        checkpoint=result["best_checkpoint"],
        data=str(tmp_path / "pics" / "*.png"),
        out=tmp_path / "g.npy",
    )
    assert globbed.n == 3
    (tmp_path / "notes.png").write_text("not a picture")
    (tmp_path / "blank.png").write_bytes(b"")
    Image.new("L", (40, 40), 255).save(tmp_path / "white.png")
    for name, reason in (
        ("notes.png", "not a readable picture"),
        ("white.png", "holds no digit"),
        ("missing.png", "no such file"),
        ("empty-folder", "holds no picture"),
    ):
        if name == "empty-folder":
            (tmp_path / name).mkdir()
        with pytest.raises(DigitlabError, match=reason) as refused:
            predict(
                checkpoint=result["best_checkpoint"],
                data=str(tmp_path / name),
                out=tmp_path / "x.npy",
            )
        assert "\n" not in str(refused.value)


@pytest.fixture(scope="module")
def real_checkpoint(migrated_db, tmp_path_factory):
    """The best checkpoint of a LeNet (experiment=fast) trained one epoch on the real MNIST."""
    folder = tmp_path_factory.mktemp("real")
    cfg = fast_config(
        REAL_DATA,
        copy_store(folder, migrated_db),
        "experiment=fast",
        "trainer.max_epochs=1",
        "data.val_size=1000",
    )
    return train(cfg, output_dir=folder / "job")["best_checkpoint"]


def real_test_digits(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` digits of MNIST's real test set and their labels."""
    from digitlab.data.idx import read_images, read_labels

    raw = REAL_DATA / "MNIST" / "raw"
    images = read_images(raw / "t10k-images-idx3-ubyte.gz")[:n].numpy()
    return images, read_labels(raw / "t10k-labels-idx1-ubyte.gz")[:n].numpy()


def predicted_digits(checkpoint, folder, out) -> tuple[np.ndarray, list[dict]]:
    """digitlab-predict's digits of the pictures in ``folder``, by file name, and its rows."""
    import csv

    from digitlab.jobs.predict import predict

    written = predict(checkpoint=checkpoint, data=str(folder), out=out)
    with open(written.digits, newline="") as f:
        rows = list(csv.DictReader(f))
    return np.array([int(row["digit"]) for row in rows]), rows


def test_a_folder_with_unreadable_pictures_predicts_the_others_and_says_why_in_their_rows(
    model, tmp_path
):
    """One file that is no picture, or a blank page, among a folder's pictures: its row of
    digits.csv says why (empty digit), its probabilities are NaN, the others are predicted."""
    import csv

    from digitlab.cli.predict import summary
    from digitlab.jobs.predict import predict

    result, _ = model
    folder = tmp_path / "pics"
    save_pictures(digits(3), folder)
    (folder / "0001.png").write_text("not a picture")
    Image.new("L", (40, 40), 255).save(folder / "white.png")
    out = predict(checkpoint=result["best_checkpoint"], data=str(folder), out=tmp_path / "p.npy")
    with open(out.digits, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["file"] for row in rows] == [
        str(folder / name) for name in ("0000.png", "0001.png", "0002.png", "white.png")
    ]
    assert [bool(row["digit"]) for row in rows] == [True, False, True, False]
    assert "not a readable picture" in rows[1]["error"] and "holds no digit" in rows[3]["error"]
    assert not rows[0]["error"] and 0 < float(rows[0]["confidence"]) <= 1
    assert rows[0]["unsure"] == ("true" if float(rows[0]["confidence"]) < UNSURE_BELOW else "false")
    probs = np.load(out.probabilities)
    assert probs.shape == (4, 10) and np.isnan(probs[[1, 3]]).all()
    assert not np.isnan(probs[[0, 2]]).any()
    assert out.n == 4 and out.unreadable == 2
    printed = "\n".join(summary(out))
    assert "2 of 4 pictures could not be read: their rows of digits.csv say why" in printed
    assert f"\n    {rows[1]['error']}\n" in printed and str(folder / "0001.png") in rows[1]["error"]
    (folder / "0000.png").write_text("nor this")
    (folder / "0002.png").unlink()
    with pytest.raises(DigitlabError, match="none of its 3 pictures can be read") as refused:
        predict(checkpoint=result["best_checkpoint"], data=str(folder), out=tmp_path / "q.npy")
    assert "\n" not in str(refused.value)


@pytest.mark.slow
@pytest.mark.real_data
def test_real_mnist_digits_as_dark_on_light_pictures_are_recognised(real_checkpoint, tmp_path):
    """MNIST test digits saved as dark-on-light PNGs at 28, 56 and 200 px, read back through
    digitlab-predict, are recognised by a LeNet trained one epoch at >= 97 %."""
    images, labels = real_test_digits(600)
    save_pictures(images, tmp_path / "pics")
    predicted, _ = predicted_digits(real_checkpoint, tmp_path / "pics", tmp_path / "p.npy")
    accuracy = float((predicted == labels).mean())
    print(f"accuracy on {len(labels)} pictures: {accuracy:.4f}")
    assert accuracy >= 0.97


def photo_page(digit: np.ndarray, rng: np.random.Generator, noise: np.ndarray) -> bytes:
    """A JPEG photo of a page, 1500-2000 px high, with ``digit`` (MNIST's, light on dark) written
    dark on it at a random place and size (60 px to half the page): paper of a random grey,
    lit unevenly (a gradient of up to 40 levels, a vignette of up to 80), sensor noise (a piece
    of ``noise``, a standard normal field, scaled), JPEG quality 60-95."""
    import io

    h = int(rng.integers(1500, 2001))
    w = int(h * rng.uniform(0.7, 1.0))
    y = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    x = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    (gy, gx), (cy, cx) = rng.uniform(-40, 40, 2), rng.uniform(-0.2, 0.2, 2)
    vignette = rng.uniform(20, 80) * 2 * ((y - cy) ** 2 + (x - cx) ** 2)
    paper = rng.uniform(175, 235) + gy * y + gx * x - vignette
    side = int(rng.integers(60, min(h, w) // 2))
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.BICUBIC), np.float32)
    top, left = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
    box = paper[top : top + side, left : left + side]
    box += (rng.uniform(10, 80) - box) * np.clip(ink / 255, 0, 1)
    oy, ox = rng.integers(0, noise.shape[0] - h + 1), rng.integers(0, noise.shape[1] - w + 1)
    paper += noise[oy : oy + h, ox : ox + w] * rng.uniform(3, 12)
    buffer = io.BytesIO()
    quality = int(rng.integers(60, 96))
    Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.mark.slow
@pytest.mark.real_data
def test_real_mnist_digits_photographed_on_large_uneven_pages_are_recognised(
    real_checkpoint, tmp_path
):
    """200 MNIST test digits, each written dark at a random place and size on a large photo-like
    page (uneven grey paper, noise, JPEG), through digitlab-predict: >= 95 % right, each with
    its confidence. The paper is no ink: the digit is found on it as document tools find it."""
    images, labels = real_test_digits(200)
    rng = np.random.default_rng(7)
    noise = rng.standard_normal((2000, 2000), dtype=np.float32)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(images):
        (folder / f"{i:04d}.jpg").write_bytes(photo_page(image, rng, noise))
    predicted, rows = predicted_digits(real_checkpoint, folder, tmp_path / "p.npy")
    accuracy = float((predicted == labels).mean())
    print(f"accuracy on {len(labels)} photographed pages: {accuracy:.4f}")
    assert accuracy >= 0.95
    confidence = np.array([float(row["confidence"]) for row in rows])
    assert ((confidence > 0) & (confidence <= 1)).all()
    unsure = np.array([row["unsure"] == "true" for row in rows])
    clear = np.abs(confidence - UNSURE_BELOW) > 1e-3  # the file's 4 decimals, not the floor's
    assert np.array_equal(unsure[clear], confidence[clear] < UNSURE_BELOW)

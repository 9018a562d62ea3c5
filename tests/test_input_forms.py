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
from digitlab.serving.model import BadInput, as_pixels
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
                served = json.loads(answer.read())["predictions"]["probabilities"]
            np.testing.assert_allclose(served, expected, atol=1e-5, err_msg=form)
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
    assert rows[0] == "file,digit" and len(rows) == 7 and out.submission is None
    assert rows[1].startswith(str(tmp_path / "pics" / "0000.jpg"))
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


@pytest.mark.slow
@pytest.mark.real_data
def test_real_mnist_digits_as_dark_on_light_pictures_are_recognised(
    data_root, migrated_db, tmp_path
):
    """MNIST test digits saved as dark-on-light PNGs at 28, 56 and 200 px, read back through
    digitlab-predict, are recognised by a LeNet trained one epoch at >= 97 %."""
    from digitlab.data.idx import read_images, read_labels

    cfg = fast_config(
        REAL_DATA,
        copy_store(tmp_path, migrated_db),
        "experiment=fast",
        "trainer.max_epochs=1",
        "data.val_size=1000",
    )
    result = train(cfg, output_dir=tmp_path / "job")
    raw = REAL_DATA / "MNIST" / "raw"
    images = read_images(raw / "t10k-images-idx3-ubyte.gz")[:600].numpy()
    labels = read_labels(raw / "t10k-labels-idx1-ubyte.gz")[:600].numpy()
    save_pictures(images, tmp_path / "pics")
    from digitlab.jobs.predict import predict

    out = predict(
        checkpoint=result["best_checkpoint"], data=str(tmp_path / "pics"), out=tmp_path / "p.npy"
    )
    rows = [row.rsplit(",", 1) for row in out.digits.read_text().splitlines()[1:]]
    predicted = np.array([int(digit) for _, digit in rows])
    accuracy = float((predicted == labels).mean())
    print(f"accuracy on {len(labels)} pictures: {accuracy:.4f}")
    assert accuracy >= 0.97

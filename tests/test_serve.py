"""digitlab-serve: real MNIST test digits over REST give the offline probabilities; every bad
request is a 4xx with a one-line reason, and the server keeps serving."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import warm
from conftest import REAL_DATA, copy_store, fast_config, stop_server
from digitlab.serving.model import probabilities
from digitlab.training.checkpoints import network_from_checkpoint
from digitlab.training.run import train


def serve_command(tracking_uri: str, *args: str) -> list[str]:
    """``digitlab-serve`` on a port the system picks, over ``tracking_uri``."""
    return [
        sys.executable,
        "-m",
        "digitlab.cli.serve",
        "--port",
        "0",
        "--tracking-uri",
        tracking_uri,
        *args,
    ]


def start_server(tracking_uri: str, log: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """``digitlab-serve`` on a free 127.0.0.1 port; its output goes to ``log`` (never blocks)."""
    command = serve_command(tracking_uri, *args)
    with log.open("w") as out:
        server = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if found := re.search(r"on (http://127\.0\.0\.1:\d+)/", log.read_text()):
            return server, found.group(1)
        if server.poll() is not None:
            pytest.fail(
                f"digitlab-serve exited with {server.returncode}:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.2)
    stop_server(server)
    pytest.fail(f"digitlab-serve did not start:\n{log.read_text()[-3000:]}")


def post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def served(data_root, migrated_db, tmp_path_factory):
    """A run with a logged model and ``digitlab-serve --run`` on it, shared by the tests here
    (the server must survive each test's requests): (url, result)."""
    folder = tmp_path_factory.mktemp("served")
    cfg = fast_config(
        data_root, copy_store(folder, migrated_db), "model=lenet_small", "logger.log_model=true"
    )
    result = train(cfg, output_dir=folder / "job")
    server, url = start_server(
        cfg.logger.tracking_uri, folder / "serve.log", "--run", result["run_id"]
    )
    try:
        yield url, result
    finally:
        stop_server(server)


@pytest.mark.slow
@pytest.mark.real_data
def test_real_mnist_digits_over_rest_match_offline_prediction(served):
    from digitlab.data.idx import read_images

    url, result = served
    images = read_images(REAL_DATA / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz")[:300]
    net, config = network_from_checkpoint(result["best_checkpoint"])
    offline = probabilities(net, images, config).numpy()
    # Two layouts a client may send: (N, 28, 28) integers and (N, 784) floats.
    for pixels in (images.tolist(), images.reshape(-1, 784).float().tolist()):
        status, body = post(f"{url}/invocations", json.dumps({"inputs": pixels}).encode())
        assert status == 200, body
        served_probs = np.array(body["predictions"]["probabilities"])
        np.testing.assert_allclose(served_probs, offline, atol=1e-5)
        assert body["predictions"]["digit"] == offline.argmax(1).tolist()


BAD = [
    ("wrong shape", json.dumps({"inputs": [[0] * 783]}), 400, "shape"),
    ("wrong dtype", json.dumps({"inputs": [["x"] * 784]}), 400, "not numbers"),
    ("booleans", json.dumps({"inputs": [[True] * 784]}), 400, "not numbers"),
    ("ragged", json.dumps({"inputs": [[0] * 784, [0] * 10]}), 400, "ragged"),
    ("above 255", json.dumps({"inputs": [[256] * 784]}), 400, "0..255"),
    ("negative", json.dumps({"inputs": [[-0.5] * 784]}), 400, "0..255"),
    ("not JSON", "pixels please", 400, "not JSON"),
    ("no pixels", json.dumps({"data": 1}), 400, "no pixels"),
    ("no images", json.dumps({"inputs": []}), 400, "shape"),
]


@pytest.mark.slow
def test_bad_requests_get_a_4xx_with_one_line_and_the_server_survives(served):
    url, _ = served
    for case, body, status, reason in BAD:
        got, answer = post(f"{url}/invocations", body.encode())
        assert got == status, (case, answer)
        assert reason in answer["message"] and "\n" not in answer["message"], (case, answer)
    too_large = post(f"{url}/invocations", b"[]", {"Content-Length": str(10**9)})
    assert too_large[0] == 413 and "at most" in too_large[1]["message"]
    assert post(f"{url}/invocations?model=/etc/passwd", b"[]")[0] == 404
    assert post(f"{url}/invocations?model=models:/nope@best", b"[]")[0] == 404
    assert post(f"{url}/elsewhere", b"[]")[0] == 404
    assert post(f"{url}/draw", json.dumps({"png": "data:image/png;base64,AAAA"}).encode())[0] == 400
    with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
        assert response.read() == b"OK"


@pytest.mark.slow
def test_a_bad_model_is_one_line_at_start(store, tmp_path):
    module, *args = serve_command(store["tracking_uri"])[2:]  # forked warm: tests/warm.py
    done = warm.run(module, *args, timeout=300)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("digitlab: error: no model in")

"""digitlab-serve as a service: silent or trickling clients are dropped and hold no worker, a
fixed pool of threads answers a burst of 200 clients, hostile bodies (deep nesting, wrong type,
too large, more JSON values than pixels need), methods and Host headers get one JSON line each, a
slow model load holds only its own requests, and the server keeps serving.

The server runs in this process on a free 127.0.0.1 port with a stub model that checks its
pixels as the real one does, so each test takes seconds and trains nothing."""

from __future__ import annotations

import http.client
import json
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib.resources import files
from types import SimpleNamespace

import numpy as np
import psutil
import pytest

from digitlab.serving.model import as_pixels
from digitlab.serving.models import ModelCache, UnknownModel
from digitlab.serving.server import MAX_BODY, make_server

ONE_IMAGE = json.dumps({"inputs": [[0] * 784]}).encode()


class StubModel:
    """predict() as a served model's: the pixels checked, ten equal probabilities each."""

    def predict(self, data):
        n = len(as_pixels(data))
        return {"probabilities": np.full((n, 10), 0.1, np.float32), "digit": np.zeros(n, np.int64)}


class StubModels:
    def get(self, uri: str) -> StubModel:
        return StubModel()


@contextmanager
def serving(client=None, **options) -> Iterator[tuple[int, object]]:
    """make_server on a free 127.0.0.1 port, serving in a thread: (port, server)."""
    if client is None:
        client = SimpleNamespace(tracking_uri="sqlite:///unused.db")
        options.setdefault("models", StubModels())
    server = make_server(client, "models:/stub@best", **options)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield server.server_address[1], server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request; JSON unless ``headers`` says otherwise."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(
            method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})}
        )
        response = connection.getresponse()
        return response.status, response.headers, response.read()  # names in any case
    finally:
        connection.close()


def raw(port: int, data: bytes, seconds: float = 10) -> bytes:
    """What the server answers to ``data`` sent as is, read until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as s:
        s.sendall(data)
        return read_to_end(s)


def read_to_end(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def one_json_line(body: bytes, status: str) -> str:
    """The message of a JSON error answer, checked to be one line with ``status``'s name."""
    answer = json.loads(body)
    assert set(answer) == {"error_code", "message"} and answer["error_code"] == status, answer
    assert "\n" not in body.decode() and "\n" not in answer["message"], body
    return answer["message"]


def still_serving(port: int) -> None:
    assert request(port, "GET", "/health")[::2] == (200, b"OK")
    status, _, body = request(port, "POST", "/invocations", ONE_IMAGE)
    assert status == 200 and json.loads(body)["predictions"]["digit"] == [0]


def test_a_silent_or_stalled_client_is_dropped_within_the_timeout():
    with serving(workers=1, timeout=0.5) as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as silent:
            started = time.monotonic()
            assert silent.recv(1024) == b""  # closed by the server, before this side's 5 s
            assert time.monotonic() - started < 3
        headers = (
            b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", port), timeout=5) as stalled:
            stalled.sendall(headers + b'{"inputs": ')  # then nothing more
            started = time.monotonic()
            answer = read_to_end(stalled)
            assert time.monotonic() - started < 3
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408")
        assert "stopped arriving" in one_json_line(body, "REQUEST_TIMEOUT")
        still_serving(port)  # the only worker is free again


def test_a_trickling_client_is_dropped_after_the_request_deadline():
    with serving(workers=1, timeout=0.5, request_seconds=1) as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as trickle:
            started = time.monotonic()
            try:
                while time.monotonic() - started < 5:  # one byte per 0.2 s, each within 0.5 s
                    trickle.sendall(b"G")
                    if select.select([trickle], [], [], 0.2)[0]:
                        break  # the server closed it
            except OSError:
                pass
            assert time.monotonic() - started < 3
        still_serving(port)


def test_a_fixed_pool_of_threads_answers_however_many_clients_connect():
    with serving(workers=2, timeout=0.5) as (port, _):
        threads = threading.active_count()
        silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(6)]
        try:
            time.sleep(0.3)  # the server has accepted them by now
            assert threading.active_count() <= threads  # no thread per connection
            started = time.monotonic()
            still_serving(port)  # once the two workers have dropped the silent ones
            assert time.monotonic() - started < 8
        finally:
            for s in silent:
                s.close()


def test_200_concurrent_clients_all_get_an_answer_without_a_reset():
    results: list[object] = [None] * 200
    with serving() as (port, _):
        start = threading.Barrier(len(results))

        def client(i: int) -> None:
            start.wait()
            try:
                status, _, body = request(port, "POST", "/invocations", ONE_IMAGE)
                results[i] = status if json.loads(body)["predictions"]["digit"] == [0] else body
            except Exception as e:  # a reset, a timeout: reported below with the others
                results[i] = repr(e)

        clients = [threading.Thread(target=client, args=(i,)) for i in range(len(results))]
        for c in clients:
            c.start()
        for c in clients:
            c.join(60)
    failed = [r for r in results if r != 200]
    assert not failed, f"{len(failed)} of 200 failed, e.g. {failed[:3]}"


def test_json_nested_100_000_deep_is_a_400():
    with serving() as (port, _):
        status, _, body = request(port, "POST", "/invocations", b"[" * 100_000)
        assert status == 400 and "nests too deep" in one_json_line(body, "BAD_REQUEST")
        still_serving(port)


def test_10_000_images_as_compact_json_are_accepted():
    images = np.random.default_rng(0).integers(0, 256, size=(10_000, 784), dtype=np.uint8)
    body = json.dumps({"inputs": images.tolist()}, separators=(",", ":")).encode()
    assert len(body) > 16 * 1024 * 1024  # MNIST's t10k is about 18 MB this way
    with serving() as (port, _):
        status, _, answer = request(port, "POST", "/invocations", body)
        assert status == 200, answer[:300]
        assert len(json.loads(answer)["predictions"]["digit"]) == 10_000
    # json.dumps' default ", " separators at 3 digits a pixel: 5 bytes each, 39 MB in all
    row = len(json.dumps([255] * 784))
    assert len('{"inputs": []}') + 10_000 * row + 9_999 * 2 < MAX_BODY


def test_a_body_over_the_limit_is_a_413_before_it_is_read():
    with serving() as (port, _):
        started = time.monotonic()
        status, _, body = request(
            port, "POST", "/invocations", b"[]", {"Content-Length": str(MAX_BODY + 1)}
        )
        assert status == 413 and "at most" in one_json_line(body, "REQUEST_ENTITY_TOO_LARGE")
        assert time.monotonic() - started < 3  # not waiting for the 64 MiB
        still_serving(port)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"])
def test_other_methods_get_a_json_405_with_allow(method):
    with serving() as (port, _):
        status, headers, body = request(port, method, "/invocations", b"[]")
        assert status == 405 and headers["Allow"] == "GET, HEAD, POST"
        assert method in one_json_line(body, "METHOD_NOT_ALLOWED")
        still_serving(port)


def test_head_is_get_without_the_body():
    with serving() as (port, _):
        status, headers, body = request(port, "HEAD", "/health")
        assert (status, headers["Content-Length"], body) == (200, "2", b"")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "LOCALHOST", "digits.lan"])
def test_loopback_names_and_allowed_hosts_are_answered(host):
    with serving(allowed_hosts=("digits.lan",)) as (port, _):
        status, _, body = request(
            port, "POST", "/invocations", ONE_IMAGE, {"Host": f"{host}:{port}"}
        )
        assert status == 200, body


def test_another_host_is_a_403_naming_the_fix():
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1."""
    with serving() as (port, _):
        for method, path, body in (("GET", "/models", None), ("POST", "/invocations", ONE_IMAGE)):
            status, _, answer = request(port, method, path, body, {"Host": f"evil.example:{port}"})
            message = one_json_line(answer, "FORBIDDEN")
            assert status == 403 and "evil.example" in message and "--allow-host" in message
        still_serving(port)


def test_which_hosts_each_binding_allows():
    from digitlab.serving.server import host_allowed, host_name

    assert host_name("[::1]:5001") == "::1" and host_name("Localhost:80") == "localhost"
    assert not host_allowed("evil.example", "127.0.0.1")
    assert host_allowed("127.0.0.1:5001", "127.0.0.1") and host_allowed(None, "127.0.0.1")
    assert host_allowed("evil.example", "127.0.0.1", ("*",))
    # Open to the network: any name, unless names are given.
    assert host_allowed("box.lan:5001", "0.0.0.0")
    assert not host_allowed("evil.example", "0.0.0.0", ("box.lan",))
    assert host_allowed("box.lan", "0.0.0.0", ("box.lan",))
    assert host_allowed("192.168.1.5:5001", "192.168.1.5", ("box.lan",))


@pytest.mark.parametrize("kind", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_declared_json_is_a_415(kind):
    with serving() as (port, _):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": kind} if kind else {}
        connection.request("POST", "/invocations", body=ONE_IMAGE, headers=headers)
        response = connection.getresponse()
        message = one_json_line(response.read(), "UNSUPPORTED_MEDIA_TYPE")
        assert response.status == 415 and "application/json" in message
        connection.close()
        still_serving(port)


def test_json_with_a_charset_is_accepted_and_the_page_sends_json():
    with serving() as (port, _):
        kind = {"Content-Type": "Application/JSON; charset=utf-8"}
        assert request(port, "POST", "/invocations", ONE_IMAGE, kind)[0] == 200
    page = files("digitlab.serving").joinpath("static", "index.html").read_text()
    assert 'headers: {"Content-Type": "application/json"}' in page


def test_a_malformed_request_gets_a_400_and_the_server_keeps_serving():
    """uvicorn refuses it before the app sees it, with its own plain-text 400."""
    with serving() as (port, _):
        assert raw(port, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        still_serving(port)


@pytest.mark.parametrize(
    "sent", [b"GET /" + b"x" * 70_000, b"GET / HTTP/1.1\r\nX: " + b"x" * 70_000]
)
def test_a_head_over_head_bytes_arriving_in_pieces_is_a_400(sent):
    """h11 holds at most HEAD_BYTES of a head that is not complete yet."""
    with serving() as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            try:
                for i in range(0, len(sent), 4096):
                    s.sendall(sent[i : i + 4096])
            except OSError:  # refused and closed while still sending
                pass
            assert read_to_end(s).startswith(b"HTTP/1.1 400 ")
        still_serving(port)


def test_a_post_without_content_length_is_a_411():
    with serving() as (port, _):
        answer = raw(
            port, b"POST /invocations HTTP/1.0\r\nContent-Type: application/json\r\n\r\n[]"
        )
        assert "Content-Length" in one_json_line(
            answer.partition(b"\r\n\r\n")[2], "LENGTH_REQUIRED"
        )
        still_serving(port)


def test_a_body_shorter_than_its_length_is_a_408_though_the_client_closed_its_side():
    """5 of 50 bytes, then the client closes its sending side: the body stops arriving (a 408),
    answered on the half of the connection still open."""
    with serving(timeout=0.5) as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                b"POST /invocations HTTP/1.0\r\nContent-Type: application/json\r\n"
                b"Content-Length: 50\r\n\r\n[[0]]"
            )
            s.shutdown(socket.SHUT_WR)
            answer = read_to_end(s)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        one_json_line(answer.partition(b"\r\n\r\n")[2], "REQUEST_TIMEOUT")
        still_serving(port)


def test_a_registered_model_named_with_quotes_is_listed(store, tmp_path):
    """available() must quote a name holding ' (and one holding both ' and ")."""
    from mlflow.tracking import MlflowClient

    from digitlab.cli.serve import default_model

    client = MlflowClient(store["tracking_uri"])
    for name in ("a'b", "c'\"d"):
        client.create_registered_model(name)
        client.create_model_version(name, str(tmp_path))
    assert default_model(client).startswith("models:/")  # what a bare digitlab-serve starts on
    with serving(client) as (port, _):
        status, _, body = request(port, "GET", "/models")
        assert status == 200, body
        uris = [m["uri"] for m in json.loads(body)["models"]]
        assert {"models:/a'b/1", "models:/c'\"d/1"} <= set(uris)


def test_a_bare_serve_whose_newest_models_run_is_gone_says_so_in_one_line(store, capsys):
    """A logged model whose run row is gone (``mlflow gc``, a store copied in part): a bare
    digitlab-serve names it and the fix instead of a trace, and /models leaves it out."""
    from mlflow.tracking import MlflowClient

    from digitlab.cli import serve

    client = MlflowClient(store["tracking_uri"])
    experiment = client.create_experiment("gone", artifact_location=store["artifact_location"])
    run = client.create_run(experiment).info.run_id
    model = client.create_logged_model(experiment, name="model", source_run_id=run).model_id
    with sqlite3.connect(store["tracking_uri"].removeprefix("sqlite:///")) as db:
        db.execute("DELETE FROM runs WHERE run_uuid = ?", (run,))
    with pytest.raises(SystemExit) as exit_:
        serve.main(["--tracking-uri", store["tracking_uri"], "--port", "0"])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert model in err and run in err and "--model" in err, err
    with serving(client) as (port, _):
        status, _, body = request(port, "GET", "/models")
        assert status == 200 and json.loads(body)["models"] == [], body


# A server in a process of its own, so its memory is its own: any other model is refused.
SERVER = """
from types import SimpleNamespace
from digitlab.serving.server import make_server
class Models:
    def get(self, uri):
        raise AssertionError("no request here gets as far as a model")
server = make_server(SimpleNamespace(tracking_uri="sqlite:///unused.db"), "m", models=Models())
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def peak_rss_during(pid: int, work) -> tuple[object, int]:
    """``work()``'s result, and how far ``pid``'s resident memory rose above its level before,
    at most, while ``work`` ran (sampled every few milliseconds from another thread)."""
    process = psutil.Process(pid)
    before = peak = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.002):
            peak = max(peak, process.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = work()
    finally:
        done.set()
        sampler.join()
    return result, peak - before


def test_a_body_of_empty_lists_costs_its_bytes_not_a_python_object_each():
    """64 MiB of ``[],`` is 22 million lists to json.loads, over 2 GB: refused on a count of
    its brackets first, the server's memory rising by about the body's bytes."""
    body = b"[" + b"[]," * ((MAX_BODY - 4) // 3) + b"[]]"
    assert len(body) <= MAX_BODY
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        (status, _, answer), rise = peak_rss_during(
            server.pid, lambda: request(port, "POST", "/invocations", body)
        )
        assert rise < 300 * 1024 * 1024, f"the server grew by {rise / 2**20:.0f} MB"
        assert status == 400, answer[:300]
        assert "more than pixels of 10000 images need" in one_json_line(answer, "BAD_REQUEST")
        assert request(port, "GET", "/health")[::2] == (200, b"OK")
    finally:
        server.terminate()
        server.wait(30)


@pytest.mark.parametrize("layout", ["(N, 28, 28) spaced", "dataframe_split"])
def test_the_largest_pixel_requests_of_each_layout_are_accepted(layout):
    """10 000 images (MAX_ROWS) in the layouts with the most JSON per pixel stay within the
    counts a body is refused on: (N, 28, 28) with json.dumps' spaces (29 lists an image), and
    dataframe_split with its 784 column names and an index."""
    images = np.random.default_rng(0).integers(0, 256, size=(10_000, 28, 28), dtype=np.uint8)
    if layout == "dataframe_split":
        payload = {
            "dataframe_split": {
                "columns": [f"pixel{i}" for i in range(784)],
                "index": list(range(10_000)),
                "data": images.reshape(10_000, 784).tolist(),
            }
        }
    else:
        payload = {"inputs": images.tolist()}
    body = json.dumps(payload).encode()
    with serving() as (port, _):
        status, _, answer = request(port, "POST", "/invocations", body)
        assert status == 200, answer[:300]
        assert len(json.loads(answer)["predictions"]["digit"]) == 10_000


def test_clients_trickling_their_request_lines_hold_no_worker():
    """Six clients each trickling a request line, two workers: /health is answered while all
    six are still connected and trickling."""
    with serving(workers=2, head_seconds=60) as (port, _):
        tricklers = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(6)]
        stop, dropped = threading.Event(), []

        def trickle() -> None:
            while not stop.wait(0.2):  # a byte each, well within the 5 s of silence allowed
                for s in tricklers:
                    try:
                        s.sendall(b"G")
                    except OSError:
                        dropped.append(s)

        thread = threading.Thread(target=trickle)
        thread.start()
        try:
            assert request(port, "GET", "/health")[::2] == (200, b"OK")
            still_serving(port)
        finally:
            stop.set()
            thread.join()
        # Still connected: nothing to read (a closed connection reads as its end).
        assert not dropped and not select.select(tricklers, [], [], 0)[0]
        for s in tricklers:
            s.close()


def test_a_request_line_trickled_past_head_seconds_is_dropped():
    """A byte every 0.2 s is never 5 s of silence, but the head is not there after 1 s in all."""
    with serving(workers=1, head_seconds=1) as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as trickle:
            closed = False
            for _ in range(50):  # 10 s of trickling at most
                try:
                    trickle.sendall(b"G")
                except OSError:
                    closed = True
                    break
                if select.select([trickle], [], [], 0.2)[0]:
                    closed = trickle.recv(1024) == b""  # dropped without an answer
                    break
            assert closed
        still_serving(port)


def test_a_slow_model_load_holds_neither_loaded_models_nor_health():
    """Under --any-model a model that takes its time to load holds its own requests only: a
    loaded model answers and /health too, and a request beyond the loads allowed at once (one
    here) gets a 503 at once instead of a worker."""
    loading, release = threading.Event(), threading.Event()

    def load(uri: str) -> StubModel:  # the store's download, taking its time for models:/slow/1
        if uri == "models:/slow/1":
            loading.set()
            release.wait(60)
        return StubModel()

    cache = ModelCache("sqlite:///unused.db", allowed=None, loading=1, load=load)
    cache.get("models:/fast/1")
    with serving(models=cache, workers=2) as (port, _), ThreadPoolExecutor(1) as pool:
        slow = pool.submit(request, port, "POST", "/invocations?model=models:/slow/1", ONE_IMAGE)
        try:
            assert loading.wait(30)
            status, _, body = request(port, "POST", "/invocations?model=models:/fast/1", ONE_IMAGE)
            assert status == 200 and not slow.done(), body
            assert request(port, "GET", "/health")[::2] == (200, b"OK")
            status, headers, body = request(
                port, "POST", "/invocations?model=models:/other/1", ONE_IMAGE
            )
            assert status == 503 and headers["Retry-After"] == "5"
            assert "retry" in one_json_line(body, "SERVICE_UNAVAILABLE")
            assert not slow.done()  # all of the above while the load went on
        finally:
            release.set()
        assert slow.result()[0] == 200
        assert request(port, "POST", "/invocations?model=models:/other/1", ONE_IMAGE)[0] == 200


def test_a_drawing_over_2000_px_a_side_is_refused_before_it_is_decoded():
    """/draw's PNG is at most the body's bytes, and its pixels at most 2000 a side: the size is
    read from the PNG's header, before the pixels are decompressed."""
    import base64
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.new("L", (2001, 1)).save(png, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    with serving() as (port, _):
        status, _, body = request(port, "POST", "/draw", json.dumps({"png": url}).encode())
        assert status == 400 and "at most 2000 a side" in one_json_line(body, "BAD_REQUEST")
        still_serving(port)


def body_head(length: int) -> bytes:
    return (
        b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


def test_clients_trickling_their_bodies_hold_no_worker_and_get_a_408_in_the_end():
    """Six clients each trickling a body, two workers: /health is answered while all six are
    still sending; each gets its 408 once its body's time is up."""
    with serving(workers=2, request_seconds=3) as (port, _):
        tricklers = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(6)]
        for s in tricklers:
            s.sendall(body_head(100) + b"[")
        stop, dropped = threading.Event(), []

        def trickle() -> None:
            while not stop.wait(0.2):
                for s in tricklers:
                    try:
                        s.sendall(b" ")
                    except OSError:
                        dropped.append(s)

        thread = threading.Thread(target=trickle)
        thread.start()
        try:
            assert request(port, "GET", "/health")[::2] == (200, b"OK")
            assert not dropped and not select.select(tricklers, [], [], 0)[0]
        finally:
            stop.set()
            thread.join()
        for s in tricklers:
            answer = read_to_end(s)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            one_json_line(answer.partition(b"\r\n\r\n")[2], "REQUEST_TIMEOUT")
            s.close()
        still_serving(port)


def test_bodies_beyond_body_bytes_wait_for_room_and_are_then_answered():
    """With room for 100 bytes of bodies, a stalled body holds it: a whole request waits, and is
    answered once the stalled one has its 408 and gives its room back."""
    with serving(body_bytes=100, request_seconds=2) as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as stalled:
            stalled.sendall(body_head(1000) + b"[" * 150)  # then nothing more
            status, _, body = request(port, "POST", "/invocations", ONE_IMAGE)
            assert status == 200 and json.loads(body)["predictions"]["digit"] == [0]
            assert read_to_end(stalled).startswith(b"HTTP/1.1 408")


def test_openapi_docs_metrics_health_and_ready_are_served():
    with serving() as (port, _):
        status, _, body = request(port, "GET", "/openapi.json")
        paths = json.loads(body)["paths"]
        assert {"/invocations", "/draw", "/health", "/ready", "/models", "/metrics"} <= set(paths)
        operations = [op["operationId"] for path in paths.values() for op in path.values()]
        assert len(operations) == len(set(operations)), operations  # each described once
        assert request(port, "HEAD", "/health")[0] == 200  # HEAD answers, undescribed
        status, headers, _ = request(port, "GET", "/docs")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert request(port, "GET", "/health")[::2] == (200, b"OK")
        assert request(port, "GET", "/ready")[::2] == (200, b"READY")
        request(port, "POST", "/invocations", ONE_IMAGE)
        request(port, "POST", "/invocations", b"[")
        status, headers, body = request(port, "GET", "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        text = body.decode()
        for labels in ('route="/invocations",status="200"', 'route="/invocations",status="400"'):
            assert f'digitlab_serve_requests_total{{method="POST",{labels}}} 1.0' in text, text
        assert 'digitlab_serve_request_seconds_count{route="/invocations"} 2.0' in text


def test_ready_is_a_503_while_the_default_model_cannot_be_had():
    class Failing:
        def get(self, uri: str):
            raise UnknownModel(f"no model {uri} here: pick one of /models")

    with serving(models=Failing()) as (port, _):
        assert request(port, "GET", "/ready")[0] == 503
        assert request(port, "GET", "/health")[::2] == (200, b"OK")


def test_a_prediction_under_way_holds_neither_health_nor_other_requests():
    """predict() runs in the worker threads, not on the event loop: while one takes its time,
    /health and another model's requests are answered."""
    started, release = threading.Event(), threading.Event()

    class Slow(StubModel):
        def predict(self, data):
            started.set()
            release.wait(60)
            return super().predict(data)

    class Models:
        def get(self, uri: str):
            return Slow() if uri == "slow" else StubModel()

    with serving(models=Models()) as (port, _), ThreadPoolExecutor(1) as pool:
        slow = pool.submit(request, port, "POST", "/invocations?model=slow", ONE_IMAGE)
        try:
            assert started.wait(30)
            assert request(port, "GET", "/health")[::2] == (200, b"OK")
            still_serving(port)
            assert not slow.done()
        finally:
            release.set()
        assert slow.result()[0] == 200


def test_model_after_model_is_let_go_oldest_first_but_never_the_default():
    """Under --any-model, requests naming model after model keep at most ``keep`` loaded (the
    least recently used goes), and the default model, which /ready reports on, is never the one
    let go: a readiness probe never loads it again."""
    loads: list[str] = []

    def load(uri: str) -> StubModel:
        loads.append(uri)
        return StubModel()

    default, others = "models:/default/1", [f"models:/other/{n}" for n in range(1, 6)]
    cache = ModelCache("sqlite://", keep=2, pinned=(default,), load=load)
    for uri in [default, *others]:
        cache.get(uri)
        assert len(cache.models) <= 2
    cache.get(default)  # what /ready does
    cache.get(others[-1])  # the newest other stays
    assert loads == [default, *others]
    cache.get(others[0])  # an older one was let go: loaded again
    assert loads == [default, *others, others[0]]

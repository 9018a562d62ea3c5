"""A bounded load on digitlab-serve: 200 clients at once, each sending a fixed number of
``POST /invocations`` to 127.0.0.1, then requests/s, latency and the server's peak memory.

    uv run --locked python experiments/serve_load.py                       # this checkout
    uv run --locked python experiments/serve_load.py --src /tmp/old/src --src src  # side by side
    uv run --locked python experiments/serve_load.py --src /tmp/old/src --src src --rounds 3

With ``--rounds N`` the servers take turns N times (old, new, old, new...), each load short, so
that a machine shared with other work slows all of them alike.

Trains a tiny LeNet (``model=lenet_small``, one epoch on the tests' synthetic MNIST) into a
temporary store, then for each ``--src`` (a source tree whose ``digitlab`` runs the server, on
PYTHONPATH) starts ``python -m digitlab.cli.serve --run <that run>`` on a free port, waits for it
to load the model, and runs the load: ``--procs`` client processes of ``--clients / --procs``
threads each, every thread sending ``--requests`` requests of ``--rows`` images one after
another (a new connection each, as the server closes every one). It stops by itself: every
request is answered, refused or failed once. Printed per server: answers by status, failures by
kind (a reset, a timeout), requests/s over the whole load, p50/p99 latency of the answered
requests, the server's resident memory before the load (after one request: the first sets torch
up, in seconds) and at its peak (VmRSS, VmHWM of /proc/<pid>/status) and the most threads it ran
(sampled every 20 ms).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
TINY = [
    "model=lenet_small",
    "data.val_size=40",
    "data.batch_size=32",
    "data.eval_batch_size=64",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "figures.enabled=false",
    "logger.log_model=true",
]


def train_tiny(folder: Path) -> tuple[str, str]:
    """(tracking URI, run id) of a tiny LeNet with its MLflow Model, trained in ``folder``."""
    from hydra import compose, initialize_config_dir

    from digitlab.config import CONF_DIR, register_resolvers
    from digitlab.training.run import train

    sys.path.insert(0, str(PROJECT / "tests"))  # the tests' synthetic set: test scaffolding
    from synthetic import write_mnist

    register_resolvers()
    data = write_mnist(folder / "data")
    uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    overrides = [
        *TINY,
        f"data.root={data}",
        f"logger.tracking_uri={uri}",
        f"logger.artifact_location={folder / 'mlruns' / 'artifacts'}",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return uri, train(cfg, output_dir=folder / "job")["run_id"]


def start_server(src: Path, uri: str, run_id: str, log: Path) -> tuple[subprocess.Popen, int]:
    """``digitlab-serve`` of source tree ``src`` on a free port, once it has loaded the model."""
    env = {**os.environ, "PYTHONPATH": str(src), "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [
        sys.executable,
        "-m",
        "digitlab.cli.serve",
        "--port",
        "0",
        "--tracking-uri",
        uri,
        "--run",
        run_id,
    ]
    with log.open("w") as out:
        server = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=src.parent,
            start_new_session=True,
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and server.poll() is None:
        if found := re.search(r"on http://127\.0\.0\.1:(\d+)/", log.read_text()):
            return server, int(found.group(1))
        time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"digitlab-serve of {src} did not start:\n{log.read_text()[-2000:]}")


def status_kb(pid: int, field: str) -> int:
    """A number of /proc/<pid>/status: VmRSS, VmHWM (kB), Threads."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+)", text, re.M).group(1))


def one_client(port: int, body: bytes, requests: int, out: list) -> None:
    """``requests`` POSTs one after another; (seconds, status or the error's kind) each."""
    for _ in range(requests):
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            connection.request(
                "POST", "/invocations", body=body, headers={"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            response.read()
            outcome: int | str = response.status
        except Exception as e:  # a reset, a refused or timed-out connection: counted by kind
            outcome = type(e).__name__
        finally:
            connection.close()
        out.append((time.perf_counter() - started, outcome))


def client_process(args: tuple) -> list:
    """One client process: ``threads`` clients started together; all their outcomes."""
    port, body, threads, requests, start_at = args
    out: list = []
    clients = [
        threading.Thread(target=one_client, args=(port, body, requests, out))
        for _ in range(threads)
    ]
    time.sleep(max(0.0, start_at - time.time()))  # every process starts its clients at once
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    return out


def watch_threads(pid: int, stop: threading.Event, peak: list) -> None:
    while not stop.wait(0.02):
        try:
            peak[0] = max(peak[0], status_kb(pid, "Threads"))
        except (OSError, AttributeError):
            return


def load(port: int, pid: int, args: argparse.Namespace) -> dict:
    """The load on one running server and what it cost."""
    images = np.random.default_rng(0).integers(0, 256, size=(args.rows, 784), dtype=np.uint8)
    body = json.dumps({"inputs": images.tolist()}, separators=(",", ":")).encode()
    warm: list = []
    one_client(port, body, 1, warm)  # the first prediction sets torch up (seconds): not measured
    rss_start = status_kb(pid, "VmRSS")
    stop, peak_threads = threading.Event(), [status_kb(pid, "Threads")]
    watcher = threading.Thread(target=watch_threads, args=(pid, stop, peak_threads))
    watcher.start()
    share = args.clients // args.procs
    start_at = time.time() + 1.0  # time for the processes to start
    jobs = [(port, body, share, args.requests, start_at) for _ in range(args.procs)]
    with multiprocessing.get_context("fork").Pool(args.procs) as pool:
        outcomes = [o for part in pool.map(client_process, jobs) for o in part]
    seconds = time.time() - start_at
    stop.set()
    watcher.join()
    answered = sorted(s for s, outcome in outcomes if isinstance(outcome, int))
    kinds: dict[str, int] = {}
    for _, outcome in outcomes:
        kinds[str(outcome)] = kinds.get(str(outcome), 0) + 1
    return {
        "requests": len(outcomes),
        "outcomes": kinds,
        "seconds": seconds,
        "per_s": len(outcomes) / seconds,
        "p50_ms": 1000 * float(np.percentile(answered, 50)) if answered else float("nan"),
        "p99_ms": 1000 * float(np.percentile(answered, 99)) if answered else float("nan"),
        "rss_start_mb": rss_start / 1024,
        "hwm_mb": status_kb(pid, "VmHWM") / 1024,
        "threads": peak_threads[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--src",
        action="append",
        type=Path,
        help="source tree whose digitlab serves (repeatable; default: src)",
    )
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=10, help="per client")
    parser.add_argument("--rows", type=int, default=1, help="images per request")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument(
        "--rounds", type=int, default=1, help="times each server is loaded, taking turns"
    )
    args = parser.parse_args()
    sources = [s.resolve() for s in args.src or [PROJECT / "src"]]
    for src in sources:  # else the server would quietly run the installed digitlab
        if not (src / "digitlab" / "serving" / "server.py").is_file():
            parser.error(f"{src} holds no digitlab/serving/server.py")
    folder = Path(tempfile.mkdtemp(prefix="digitlab-serve-load-"))
    try:
        uri, run_id = train_tiny(folder)
        print(
            f"{args.clients} clients x {args.requests} requests of {args.rows} image(s), "
            f"{args.procs} client processes",
            flush=True,
        )
        for round_ in range(1, args.rounds + 1):
            for i, src in enumerate(sources):
                result = load_one(src, uri, run_id, folder / f"serve{i}.log", args)
                report(src, result, round_)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def load_one(src: Path, uri: str, run_id: str, log: Path, args: argparse.Namespace) -> dict:
    server, port = start_server(src, uri, run_id, log)
    try:
        return load(port, server.pid, args)
    finally:
        server.terminate()
        server.wait(30)


def report(src: Path, r: dict, round_: int) -> None:
    print(
        f"{src} (round {round_}): {r['requests']} requests in {r['seconds']:.1f} s, "
        f"{r['per_s']:.0f}/s; "
        f"outcomes {r['outcomes']}; latency p50 {r['p50_ms']:.0f} ms, "
        f"p99 {r['p99_ms']:.0f} ms; RSS {r['rss_start_mb']:.0f} MB before the load, "
        f"peak (VmHWM) {r['hwm_mb']:.0f} MB; threads at most {r['threads']}",
        flush=True,
    )


if __name__ == "__main__":
    main()

"""Load: several `digitlab -m` sweeps at once, each running its jobs in parallel, all writing one
store; then every run is checked whole. Writes experiments/LOAD.md.

    uv run python experiments/load.py          # 4 sweeps x 4 jobs: SQLite, then a server
    uv run python experiments/load.py --sweeps 2 --stores sqlite

Each sweep is `python -m digitlab -m hydra/launcher=parallel model=mlp seed=range(...)` with
DIGITLAB_JOBS set to its job count, so sweeps x jobs training processes write at once. Data: the
tiny synthetic MNIST of the tests (240 + 80 images, IDX files); every run keeps its figures,
checkpoint and MLflow Model. The stores: a new SQLite file, then a local `mlflow server` on
127.0.0.1 (SQLite behind it, artifacts served), started and stopped here. The checks
(`check_store`) are those of tests/test_load.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# load_checks.py sits beside this script (on sys.path when it runs; the test puts it there)
from load_checks import EPOCH_METRICS, EPOCHS, RUN_FILES, TROUBLE, check_store, count_trouble

PROJECT = Path(__file__).resolve().parents[1]
# A tiny MLP job that still writes everything a run keeps: figures, checkpoint, MLflow Model.
TINY = [
    "model=mlp",
    "data.val_size=40",
    "data.batch_size=32",
    "data.eval_batch_size=64",
    f"trainer.max_epochs={EPOCHS}",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "figures.enabled=true",
    "logger.log_checkpoint=true",
    "logger.log_model=true",
]


def job_overrides(epochs: int = EPOCHS) -> list[str]:
    """:data:`TINY` with ``epochs`` epochs: more make each run last longer, so that more of the
    jobs, which start one after another on a busy machine, write the store at once."""
    return [
        f"trainer.max_epochs={epochs}" if o.startswith("trainer.max_epochs=") else o for o in TINY
    ]


def sweep_command(
    index: int, jobs: int, tracking_uri: str, data_root: Path, folder: Path, epochs: int = EPOCHS
) -> list[str]:
    """Sweep ``index``: ``jobs`` seeds of its own, run at once by the joblib launcher."""
    seeds = f"range({index * jobs},{(index + 1) * jobs})"
    return [
        sys.executable,
        "-m",
        "digitlab",
        "-m",
        "hydra/launcher=parallel",
        f"seed={seeds}",
        *job_overrides(epochs),
        f"data.root={data_root}",
        f"logger.tracking_uri={tracking_uri}",
        f"logger.artifact_location={folder / 'mlruns' / 'artifacts'}",
        f"hydra.sweep.dir={folder / f'sweep{index}'}",
    ]


def start_sweep(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``command`` as a new process in a session of its own, its output in ``log`` (a file, not a
    pipe: no undrained pipe can block a job)."""
    with log.open("w") as out:
        return subprocess.Popen(
            command,
            cwd=PROJECT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def run_sweeps(
    tracking_uri: str,
    data_root: Path,
    folder: Path,
    sweeps: int,
    jobs: int,
    timeout_s: float = 3600,
    start=start_sweep,
    epochs: int = EPOCHS,
) -> dict:
    """Start ``sweeps`` sweeps together and wait for all; ``{"seconds", "load", "exit_codes",
    "logs"}`` (``load``: the 1-minute load averages sampled meanwhile; ``logs``: output files).
    ``start(command, env, log)``: how a sweep's process starts (tests/test_load.py forks it)."""
    env = {**os.environ, "DIGITLAB_JOBS": str(jobs), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("DIGITLAB_PARENT_RUN_ID", None)
    folder.mkdir(parents=True, exist_ok=True)
    logs = [folder / f"sweep{i}.log" for i in range(sweeps)]
    processes, load = [], []
    started = time.perf_counter()
    for i, log in enumerate(logs):
        command = sweep_command(i, jobs, tracking_uri, data_root, folder, epochs)
        processes.append(start(command, env, log))
    try:
        while any(p.poll() is None for p in processes):
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError(f"the sweeps ran past {timeout_s:.0f} s: see {folder}")
            load.append(os.getloadavg()[0])
            time.sleep(2)
    finally:
        for p in processes:  # a timeout (or Ctrl-C) stops every job of every sweep
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()
    return {
        "seconds": time.perf_counter() - started,
        "load": load or [os.getloadavg()[0]],
        "exit_codes": [p.returncode for p in processes],
        "logs": logs,
    }


@contextmanager
def tracking_server(folder: Path, attempts: int = 3) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of an ``mlflow server`` (SQLite behind it, artifacts served
    from ``folder``), stopped with its workers on exit; its output goes to ``folder/server.log``."""
    from digitlab.api.ui import UI
    from digitlab.tracking.store import open_client

    db = folder / "server" / "mlflow.db"
    open_client(f"sqlite:///{db}").search_experiments()  # migrated here, before the server reads it
    # As digitlab-ui: MLflow's job runner (huey workers for its GenAI jobs) only competes for cores.
    env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    for _ in range(attempts):  # a free port can be taken between choosing it and binding it
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(folder / "server" / "art"),
        ]
        with (folder / "server.log").open("a") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        server = UI(process, f"http://127.0.0.1:{port}", folder / "server.log")
        try:
            if _answers(server.url, process):
                yield server.url
                return
        finally:
            server.stop()
    raise RuntimeError(f"mlflow server did not start: see {folder / 'server.log'}")


def _answers(url: str, process: subprocess.Popen, timeout_s: float = 300) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                return response.read().strip() == b"OK"
        except OSError:
            time.sleep(0.5)
    return False


@contextmanager
def open_store(kind: str, folder: Path) -> Iterator[str]:
    """The tracking URI of a new store of ``kind``: ``sqlite`` (a file not yet created: the
    sweeps race to create it) or ``server``."""
    folder.mkdir(parents=True)
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    else:
        with tracking_server(folder) as url:
            yield url


def measure(
    kind: str, data_root: Path, folder: Path, sweeps: int, jobs: int, epochs: int = EPOCHS
) -> dict:
    """Run the sweeps on a new store of ``kind`` and check it: :func:`run_sweeps`'s figures plus
    ``checked`` and ``trouble``."""
    with open_store(kind, folder) as uri:
        result = run_sweeps(uri, data_root, folder, sweeps, jobs, epochs=epochs)
        result["checked"] = check_store(uri, sweeps, jobs, epochs)
    result["trouble"] = count_trouble(*result["logs"], folder / "server.log")
    codes = enumerate(result["exit_codes"])
    result["checked"].failures[:0] = [f"sweep {i} exited with {code}" for i, code in codes if code]
    return result


REPORT = """# Load: concurrent sweeps on one store

Question: with {sweeps} `digitlab -m` sweeps started at once, each running {jobs} jobs in
parallel (joblib launcher, `DIGITLAB_JOBS={jobs}`: {total} training processes writing one store),
does every run arrive whole, in a SQLite store and through a tracking server?

## Command

```bash
uv run python experiments/load.py {argv}
```

Each sweep, with `DIGITLAB_JOBS={jobs}` and its own seeds, its own `hydra.sweep.dir`:

```bash
python -m digitlab -m hydra/launcher=parallel seed='range(...)' {tiny}
```

on the tests' synthetic MNIST ({train} training, 80 test images, IDX files); every job logs
its figures, checkpoint and MLflow Model. `sqlite`: a new `mlflow.db` (the sweeps race to create
it). `server`: `mlflow server` on 127.0.0.1 (its default 4 workers, SQLite behind it,
`--serve-artifacts`).

Then every run is checked (`check_store` in `experiments/load_checks.py`, which
`tests/test_load.py` runs too): each sweep's parent FINISHED with `sweep/jobs`, `sweep/finished`,
`best/val/acc` and its summary files; each of its {jobs} children FINISHED, with one finite value
of {metrics} at each of its {epochs} epochs, `test/loss` and `test/acc`, its {files} artifacts
(config, checkpoint, figures) non-empty, the logged `best.ckpt` byte-identical to the job's own
file, and exactly one READY MLflow Model holding its weights and `test/acc`.

Date: {date}, code at commit {commit}. Machine: {machine} VM, {cpus} CPU cores, {memory:.0f} GiB,
no GPU, shared with other jobs: the wall times are under that load (the 1-minute load average,
sampled every 2 s while the sweeps ran, is in the table), not benchmarks.

## Results

| store | sweeps x jobs | wall time | load avg, mean / max | at once | runs | failures | {trouble} |
|{rule}
{rows}

"at once": the most job runs RUNNING at the same moment (from their start and end times). "runs":
runs checked (parents and jobs). The last columns count signs of trouble in the output of the
sweeps and of the server: tracebacks, "database is locked", HTTP retries, HTTP 5xx answers.

Failures: {failures}
"""


def report(
    results: dict[str, dict],
    sweeps: int,
    jobs: int,
    date: str,
    epochs: int = EPOCHS,
    train: int = 240,
) -> str:
    """experiments/LOAD.md: the command, date, machine and one row per store."""
    from digitlab.tracking.run import git_commit

    rows = []
    for kind, r in results.items():
        load, checked = r["load"], r["checked"]
        cells = [
            kind,
            f"{sweeps} x {jobs}",
            f"{r['seconds']:.0f} s",
            f"{sum(load) / len(load):.1f} / {max(load):.1f}",
            checked.at_once,
            checked.runs,
            len(checked.failures),
            *(r["trouble"][name] for name in TROUBLE),
        ]
        rows.append("| " + " | ".join(map(str, cells)) + " |")
    failures = [
        f"- {kind}: {line}" for kind, r in results.items() for line in r["checked"].failures
    ]
    return REPORT.format(
        sweeps=sweeps,
        jobs=jobs,
        total=sweeps * jobs,
        argv=" ".join(sys.argv[1:]),
        tiny=" ".join(job_overrides(epochs)),
        metrics=", ".join(f"`{m}`" for m in EPOCH_METRICS),
        epochs=epochs,
        train=train,
        files=len(RUN_FILES),
        date=date,
        commit=git_commit(PROJECT),
        machine=platform.machine(),
        cpus=os.cpu_count(),
        memory=int(Path("/proc/meminfo").read_text().split()[1]) / 2**20,
        trouble=" | ".join(TROUBLE),
        rule="---|" * (7 + len(TROUBLE)),
        rows="\n".join(rows),
        failures="\n".join(["", *failures]) if failures else "none.",
    )


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sweeps", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=4, help="jobs per sweep, all at once")
    parser.add_argument(
        "--stores", nargs="+", choices=["sqlite", "server"], default=["sqlite", "server"]
    )
    parser.add_argument("--out", type=Path, default=PROJECT / "experiments" / "LOAD.md")
    parser.add_argument("--keep", action="store_true", help="keep the stores, sweeps and logs")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="each job's trainer.max_epochs")
    parser.add_argument(
        "--train-images",
        type=int,
        default=240,
        help="training images of the synthetic MNIST (more: longer epochs)",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(PROJECT / "tests"))  # the tests' synthetic set: test scaffolding
    from synthetic import write_mnist

    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # the checks download files
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = {}
    tmp = Path(tempfile.mkdtemp(prefix="digitlab-load-"))
    print(f"stores, sweeps and their logs in {tmp}", flush=True)
    try:
        data_root = write_mnist(tmp / "data", n_train=args.train_images)
        for kind in args.stores:
            results[kind] = r = measure(
                kind, data_root, tmp / kind, args.sweeps, args.jobs, args.epochs
            )
            print(
                f"{kind}: {r['seconds']:.0f} s, {r['checked'].at_once} jobs at once, "
                f"{r['checked'].runs} runs checked, {len(r['checked'].failures)} failures, "
                f"{r['trouble']}",
                flush=True,
            )
            for line in r["checked"].failures:
                print(f"  {line}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    args.out.write_text(
        report(results, args.sweeps, args.jobs, started, args.epochs, args.train_images)
    )
    return results


if __name__ == "__main__":
    sys.exit(1 if any(r["checked"].failures for r in main().values()) else 0)

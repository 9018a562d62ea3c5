"""What starting the MLflow UI costs: MLflow's defaults against digitlab-ui's settings.

    uv run python experiments/ui_start.py --store sqlite:////path/to/mlruns/mlflow.db --repeats 3

Alternates the two ways of starting `mlflow ui` on the same store, each on a free 127.0.0.1 port:
- `mlflow`: `mlflow ui --backend-store-uri URI` as MLflow starts it (4 server workers, and the job
  runner for its GenAI jobs);
- `digitlab`: what `digitlab-ui` runs (`--workers 1`, MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false).
For each start: seconds until /health answers, then (after a further settle time, while the
workers finish importing) the number of processes in its group and their CPU seconds
(user + system, from /proc). Prints one JSON line per start and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from digitlab.cli.ui import mlflow_ui_command, mlflow_ui_environment

TICKS = os.sysconf("SC_CLK_TCK")


def group_processes(group: int) -> list[tuple[int, float]]:
    """(pid, CPU seconds of the process and its waited-for children) for each process of the
    group."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # field 5 of stat: the process group
            utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
            found.append((int(entry.name), (utime + stime + cutime + cstime) / TICKS))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, store: str, settle_s: float) -> dict:
    port = free_port()
    if kind == "digitlab":
        command = mlflow_ui_command(store, port=port)
        env = mlflow_ui_environment(dict(os.environ))
    else:
        args = ["ui", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port)]
        command = [sys.executable, "-m", "mlflow", *args]
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    began = time.perf_counter()
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.read().strip() == b"OK":
                        break
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(f"mlflow ui exited with {process.returncode}") from None
                time.sleep(0.2)
        ready = time.perf_counter() - began
        time.sleep(settle_s)
        processes = group_processes(process.pid)
        return {
            "kind": kind,
            "ready_s": round(ready, 2),
            "processes": len(processes),
            "cpu_s": round(sum(cpu for _, cpu in processes), 1),
        }
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", required=True, help="an existing, migrated store's URI")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds after /health")
    args = parser.parse_args()
    rows = []
    for _ in range(args.repeats):
        for kind in ("mlflow", "digitlab"):
            rows.append(start(kind, args.store, args.settle))
            print(json.dumps(rows[-1]), flush=True)
    for kind in ("mlflow", "digitlab"):
        mine = [r for r in rows if r["kind"] == kind]
        print(
            kind,
            {
                key: statistics.median(r[key] for r in mine)
                for key in ("ready_s", "processes", "cpu_s")
            },
        )


if __name__ == "__main__":
    main()

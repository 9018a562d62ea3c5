"""How much longer a run takes with every picture on: alternating on/off runs, medians.

    DIGITLAB_DATA=/work/shared/data uv run python experiments/figures_overhead.py --pairs 4

Each run is a fresh process (`--one on|off`) calling digitlab.training.run.train on a one-epoch
LeNet
into a throw-away store; "on" runs also time the FigureLogger hooks themselves, which is the
part of the difference that does not depend on how busy the machine is.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOOKS = ("on_fit_start", "on_train_epoch_end", "on_fit_end", "on_test_end")


def one(figures: str, store: Path) -> dict:
    from hydra import compose, initialize_config_dir

    from digitlab.config import CONF_DIR, register_resolvers
    from digitlab.figures.callback import FigureLogger
    from digitlab.training.run import train

    spent = {"seconds": 0.0, "cpu": 0.0}

    def timed(name):
        def hook(self, *args, **kwargs):
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return getattr(FigureLogger, name)(self, *args, **kwargs)
            finally:
                spent["seconds"] += time.perf_counter() - start
                spent["cpu"] += time.process_time() - cpu

        return hook

    # The pictures' own callback, its hooks timed; passed to train() in place of the figures
    # group's.
    TimedFigureLogger = type("TimedFigureLogger", (FigureLogger,), {n: timed(n) for n in HOOKS})
    register_resolvers()
    overrides = [
        "model=lenet",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "figures.enabled=false",
        "logger.log_checkpoint=false",
        f"logger.tracking_uri=sqlite:///{store}/mlflow.db",
        f"logger.artifact_location={store}/artifacts",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    options = {k: v for k, v in cfg.figures.items() if k != "enabled"}
    callbacks = [TimedFigureLogger(**options)] if figures == "on" else []
    cpu = time.process_time()  # CPU seconds: far less disturbed by other jobs than wall time
    with tempfile.TemporaryDirectory() as job:
        result = train(cfg, output_dir=job, callbacks=callbacks)
    return {
        "figures": figures,
        "seconds": result["seconds"],
        "callback": spent["seconds"],
        "cpu": time.process_time() - cpu,
        "callback_cpu": spent["cpu"],
        "test/acc": result["metrics"].get("test/acc"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--one", choices=["on", "off"])
    parser.add_argument("--store", type=Path)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args.one, args.store)), flush=True)
        return
    store = Path(tempfile.mkdtemp(prefix="digitlab-overhead-"))
    runs: list[dict] = []
    for pair in range(args.pairs):
        order = ("off", "on") if pair % 2 == 0 else ("on", "off")  # alternate who goes first
        for figures in order:
            out = subprocess.run(
                [sys.executable, __file__, "--one", figures, "--store", str(store)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            run = json.loads(out.split("RESULT ", 1)[1])
            runs.append(run)
            print(json.dumps(run), flush=True)
    on = [r["seconds"] for r in runs if r["figures"] == "on"]
    off = [r["seconds"] for r in runs if r["figures"] == "off"]
    hooks = [r["callback"] for r in runs if r["figures"] == "on"]
    m_on, m_off = statistics.median(on), statistics.median(off)
    print(f"off: median {m_off:.1f} s  (min {min(off):.1f}, max {max(off):.1f})")
    print(f"on:  median {m_on:.1f} s  (min {min(on):.1f}, max {max(on):.1f})")
    print(f"difference of medians: {m_on - m_off:+.1f} s = {100 * (m_on / m_off - 1):+.1f} %")
    print(
        f"figure hooks inside 'on' runs: median {statistics.median(hooks):.2f} s "
        f"(min {min(hooks):.2f}, max {max(hooks):.2f}) = "
        f"{100 * statistics.median(hooks) / m_off:.1f} % of the median 'off' run"
    )


if __name__ == "__main__":
    main()

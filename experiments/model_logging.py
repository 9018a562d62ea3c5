"""What logging the best network as an MLflow Model adds to a run (logger.log_model).

    DIGITLAB_DATA=../shared/data uv run python experiments/model_logging.py \
        [--model lenet] [--repeat 5]

Trains one short run without a model, then logs its best checkpoint as the run's model
``--repeat`` times into a temporary store and prints the median wall time of one log.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from digitlab.config import CONF_DIR, register_resolvers
from digitlab.training.logged_model import log_model
from digitlab.training.run import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="lenet")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    register_resolvers()
    store = Path(tempfile.mkdtemp(prefix="digitlab-bench-"))
    overrides = [
        f"model={args.model}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.enable_progress_bar=false",
        "figures=off",
        "logger.log_model=false",
        f"logger.tracking_uri=sqlite:///{store}/mlflow.db",
        f"logger.artifact_location={store}/artifacts",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    result = train(cfg, output_dir=store / "job")
    from digitlab.data.sources import load_mnist

    example = load_mnist(cfg.data.root, download=False).test_images[:2].numpy()
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        log_model(
            cfg.logger.tracking_uri,
            result["run_id"],
            result["best_checkpoint"],
            example,
            {"test/acc": result["metrics"]["test/acc"]},
        )
        times.append(time.perf_counter() - started)
    print(
        f"model={args.model}: log_model median {statistics.median(times):.2f} s "
        f"(min {min(times):.2f}, max {max(times):.2f}, n={len(times)})"
    )


if __name__ == "__main__":
    main()

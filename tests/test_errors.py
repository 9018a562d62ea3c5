"""Every bad input, through the real command line: one line naming problem and fix, exit 1,
no stack trace, and no MLflow run left behind (docs/errors.md lists the same cases)."""

from __future__ import annotations

import argparse
import fcntl
import gzip
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import warm
from conftest import write_kaggle, write_mnist
from digitlab.errors import DigitlabError
from synthetic import write_idx

RAW = "MNIST/raw"
CSV = "digit-recognizer/train.csv"


def _damage_idx_gz(root: Path, name: str, payload: bytes) -> None:
    (root / RAW / name).write_bytes(gzip.compress(payload))


def _replace_csv_line(root: Path, line_no: int, edit) -> None:
    """Apply ``edit(cells) -> cells`` to 1-based line ``line_no`` of the tiny train.csv."""
    path = root / CSV
    lines = path.read_bytes().decode().split("\r\n")
    lines[line_no - 1] = ",".join(edit(lines[line_no - 1].split(",")))
    path.write_bytes("\r\n".join(lines).encode())


def _closed_port() -> socket.socket:
    """A socket bound to a port of 127.0.0.1 and not listening: while it is open, nothing else can
    take the port, and a connection to it is refused."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    return closed


# id -> (how to damage a fresh copy of the tiny data root, overrides, expected message fragments)
CASES: dict[str, tuple] = {
    "data folder missing": (
        lambda r: shutil.rmtree(r / "MNIST"),
        ["data.source.download=false"],
        ["data folder", "MNIST/raw does not exist", "DIGITLAB_DATA"],
    ),
    "data root that does not exist": (  # download on: nothing is created, no mirror tried
        None,
        ["data.root=/nowhere"],
        ["data folder /nowhere does not exist", "or create /nowhere to download MNIST into it"],
    ),
    "kaggle folder missing": (
        lambda r: shutil.rmtree(r / "digit-recognizer"),
        ["data=kaggle"],
        ["digit-recognizer does not exist", "DIGITLAB_DATA"],
    ),
    "emnist files missing": (  # no md5: never downloaded, so never "set download=true"
        None,
        ["data=emnist_balanced"],
        [
            "EMNIST files missing in",
            "download https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip, unzip it and put",
        ],
    ),
    "emnist download on": (  # nothing listens on the archive's port: the download is refused
        None,
        [
            "data=emnist_balanced",
            "data.source.download=true",
            "data.source.archive=http://127.0.0.1:{port}/gzip.zip",
        ],
        ["EMNIST files missing in", "and the download failed (http://127.0.0.1:", "gzip.zip: "],
    ),
    "one IDX file missing": (
        lambda r: (r / RAW / "t10k-labels-idx1-ubyte.gz").unlink(),
        ["data.source.download=false"],
        ["MNIST files missing", "t10k-labels-idx1-ubyte.gz", "copy them there"],
    ),
    "truncated gz": (
        lambda r: (r / RAW / "train-images-idx3-ubyte.gz").write_bytes(
            (r / RAW / "train-images-idx3-ubyte.gz").read_bytes()[:500]
        ),
        [],
        ["train-images-idx3-ubyte.gz is not a readable gzip file", "download it again"],
    ),
    "wrong IDX magic": (
        lambda r: _damage_idx_gz(r, "train-labels-idx1-ubyte.gz", b"\x00\x00\x0d\x01" + bytes(8)),
        [],
        ["wrong IDX magic number", "is it an MNIST file"],
    ),
    "image/label count mismatch": (
        lambda r: write_idx(r / RAW / "train-labels-idx1-ubyte.gz", np.zeros(239, np.uint8)),
        [],
        ["holds 240 images but train-labels-idx1-ubyte.gz holds 239 labels", "replace it"],
    ),
    "image size not 28x28": (
        lambda r: write_idx(
            r / RAW / "t10k-images-idx3-ubyte.gz", np.zeros((80, 32, 32), np.uint8)
        ),
        [],
        ["not 28x28 images", "MNIST image file"],
    ),
    "kaggle wrong header": (
        lambda r: _replace_csv_line(r, 1, lambda c: ["digit", *c[1:]]),
        ["data=kaggle"],
        ["has header digit,pixel0,pixel1", "expected label,pixel0,pixel1"],
    ),
    "kaggle short row": (
        lambda r: _replace_csv_line(r, 5, lambda c: c[:400]),
        ["data=kaggle"],
        ["line 5", "every row needs 785"],
    ),
    "kaggle non-numeric cell": (
        lambda r: _replace_csv_line(r, 7, lambda c: [*c[:10], "x", *c[11:]]),
        ["data=kaggle"],
        ["line 7: pixel9 = 'x' is not an integer", "fix that cell"],
    ),
    "kaggle pixel outside 0-255": (
        lambda r: _replace_csv_line(r, 3, lambda c: [c[0], "300", *c[2:]]),
        ["data=kaggle"],
        ["line 3: pixel0 = 300 is outside 0-255", "fix or delete that row"],
    ),
    "kaggle label outside 0-9": (
        lambda r: _replace_csv_line(r, 4, lambda c: ["12", *c[1:]]),
        ["data=kaggle"],
        ["line 4: label 12 is outside 0-9", "fix or delete that row"],
    ),
    "test.csv given for training": (
        None,
        ["data=kaggle", "data.source.file=test.csv"],
        ["has no label column (it looks like Kaggle's test.csv)", "data.source.file=train.csv"],
    ),
    "wrong value type (lr)": (
        None,
        ["optimizer.lr=abc"],
        ["optimizer.lr='abc' is invalid", "a number > 0"],
    ),
    "wrong value type (batch size)": (
        None,
        ["data.batch_size=1.5"],
        ["data.batch_size=1.5 is invalid", "an integer >= 1"],
    ),
    "negative lr": (None, ["optimizer.lr=-0.1"], ["optimizer.lr=-0.1 is invalid", "a number > 0"]),
    "batch size 0": (
        None,
        ["data.batch_size=0"],
        ["data.batch_size=0 is invalid", "an integer >= 1"],
    ),
    "steps per call 0": (
        None,
        ["data.steps_per_call=0"],
        ["data.steps_per_call=0 is invalid", "an integer >= 1"],
    ),
    "gradient accumulation": (
        None,
        ["data.steps_per_call=20", "+trainer.accumulate_grad_batches=4"],
        ["trainer.accumulate_grad_batches=4 needs one optimizer step per", "data.steps_per_call=1"],
    ),
    "unknown scheduler interval": (
        None,
        ["scheduler=cosine", "scheduler.interval=hourly"],
        ["scheduler.interval='hourly' is invalid", "epoch or step"],
    ),
    "val fraction outside (0, 1)": (
        None,
        ["data.val_size=1.5"],
        ["data.val_size=1.5 is invalid", "a fraction in (0, 1)"],
    ),
    "cross-validation folds below 2": (
        None,
        ["data.folds=1"],
        ["data.folds=1 is invalid", "an integer >= 2 (K-fold"],
    ),
    "more folds than training rows": (
        None,
        ["data.folds=500"],
        ["data.folds=500, data.fold=0 cannot split 240 training rows"],
    ),
    "download fails": (  # nothing listens on the mirror's port: the download is refused
        lambda r: shutil.rmtree(r / "MNIST"),
        ["data.source.download=true", "data.source.mirrors=[http://127.0.0.1:{port}/]"],
        [
            "MNIST files missing in",
            "train-images-idx3-ubyte.gz",
            "and the download failed",
            "http://127.0.0.1:",
            "copy them there or point DIGITLAB_DATA",
        ],
    ),
    "unreachable tracking URI": (
        None,
        ["logger.tracking_uri=http://127.0.0.1:{port}"],
        ["MLflow tracking server http://127.0.0.1:", "is unreachable", "logger.tracking_uri"],
    ),
    "validation holdout as large as the data": (
        None,
        ["data.val_size=240"],
        ["data.val_size=240 leaves no data to train on", "use 1..239"],
    ),
    "bad figures value": (
        None,
        ["figures.samples=0"],
        ["figures.samples=0 is invalid", "an integer >= 1"],
    ),
    "mps requested on Linux": (
        None,
        ["trainer.accelerator=mps"],
        ["trainer.accelerator=mps but no Apple MPS device", "trainer.accelerator=cpu"],
    ),
    "corrupt MLflow store": (  # the data root's sibling mlruns/ is the case's store
        lambda r: (r.parent / "mlruns" / "mlflow.db").write_bytes(b"not a database " * 300),
        [],
        ["mlflow.db is not a readable SQLite database", "move it aside"],
    ),
    "config naming code to run": (
        None,
        ["model._target_=os.system"],
        ["model._target_=os.system is not allowed"],
    ),
    "unknown key added with +": (
        None,
        ["+optimizer.lrr=1"],
        ["+optimizer.lrr: torch.optim.SGD takes no argument lrr", "did you mean optimizer.lr?"],
    ),
    "trainer setting Lightning rejects": (
        None,
        ["trainer.precision=banana"],
        ["Lightning rejects the trainer settings", "trainer.*"],
    ),
    "gpu without GPU": (
        None,
        ["trainer.accelerator=gpu"],
        ["trainer.accelerator=gpu but PyTorch sees no CUDA GPU", "trainer.accelerator=cpu"],
    ),
    "corrupt checkpoint": (
        None,
        ["resume={corrupt_ckpt}"],
        ["is not a readable checkpoint", "corrupt or truncated"],
    ),
    "checkpoint of another architecture": (
        None,
        ["resume={mlp_ckpt}"],
        [
            "holds weights of another architecture than the LeNet",
            "use the model config it was trained with",
        ],
    ),
    "unknown run id to resume": (
        None,
        ["resume=0123456789abcdef0123456789abcdef"],
        ["resume=0123456789abcdef0123456789abcdef is neither a checkpoint file nor a run"],
    ),
    "unknown config option": (
        None,
        ["model=lenett"],
        ["model=lenett is not an option of model", "convnet, lenet, lenet5, lenet_small, mlp"],
    ),
    "unknown option in a sweep": (
        None,
        ["-m", "model=mlp,lenett"],
        ["model=lenett is not an option of model"],
    ),
    "key one option of a sweep lacks": (
        None,
        ["-m", "model=lenet,mlp", "model.kernel_size=3"],
        ["model.kernel_size is not a key of the config with model=mlp"],
    ),
    "added key that is there": (
        None,
        ["+optimizer.lr=0.1"],
        ["optimizer.lr is already in the config", "set it without the +"],
    ),
    "group set to null": (
        None,
        ["scheduler=null"],
        ["scheduler=null is not an option of scheduler", "~scheduler"],
    ),
    "sweep without -m": (None, ["model=mlp,lenet"], ["model=mlp,lenet is a sweep: add -m"]),
    "override Hydra cannot read": (
        None,
        ["model.channels=[1,"],
        ["cannot read the override 'model.channels=[1,'"],
    ),
    "override written as a flag": (
        None,
        ["--model=mlp"],
        ["--model=mlp: Hydra overrides have no dashes: model=mlp"],
    ),
    "key of a nested node given alone": (
        None,
        ["max_epochs=1"],
        ["max_epochs is not a key of the config: did you mean trainer.max_epochs?"],
    ),
    "--cfg with -m": (
        None,
        ["-m", "--cfg=job", "model=mlp,lenet"],
        ["--cfg job prints one job's config, -m runs several"],
    ),
    "misspelt preset": (
        None,
        ["experiment=fastt"],
        ["experiment=fastt is not an option of experiment", "did you mean fast?"],
    ),
    "misspelt key": (
        None,
        ["optimizer.lrr=1"],
        ["optimizer.lrr is not a key of the config", "did you mean optimizer.lr?"],
    ),
    "seed below 0": (None, ["seed=-1"], ["seed=-1 is invalid", "from 0 to 4294967295"]),
    "seed above 2**32 - 1": (
        None,
        ["seed=99999999999"],
        ["seed=99999999999 is invalid", "from 0 to 4294967295"],
    ),
    "no devices": (
        None,
        ["trainer.devices=0"],
        ["trainer.devices=0 is invalid", "an integer >= 1"],
    ),
    "output folder not writable": (
        None,
        ["hydra.run.dir=/proc"],
        ["output folder /proc cannot be written", "hydra.run.dir"],
    ),
    "output folder under a file": (
        None,
        ["hydra.run.dir=/dev/null/out"],
        ["(/dev/null is not a folder)"],
    ),
    "widths not a list": (
        None,
        ["model.channels=abc"],
        ["model.channels='abc' is invalid", "integers from 1 to 65536"],
    ),
    "zero-width layer": (
        None,
        ["model.hidden=[0]"],
        ["model.hidden=[0] is invalid", "integers from 1 to 65536"],
    ),
    "kernel size 0": (None, ["model.kernel_size=0"], ["model.kernel_size=0 is invalid"]),
    "infinite learning rate": (
        None,
        ["optimizer.lr=inf"],
        ["optimizer.lr=inf is invalid", "a finite number"],
    ),
    "NaN in the data settings": (None, ["data.mean=nan"], ["data.mean=nan is invalid", "finite"]),
    "checkpoint holding pickled objects": (
        None,
        ["resume={foreign_ckpt}"],
        [
            "foreign.ckpt holds Python objects, not only tensors",
            "refused for safety",
            "use a checkpoint digitlab wrote",
        ],
    ),
}


def _checkpoints(folder: Path) -> dict[str, Path]:
    import torch

    from digitlab.models import MLP

    net = MLP(hidden=[128, 64], activation="relu", input_size=28)
    mlp = folder / "mlp.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, mlp)
    corrupt = folder / "corrupt.ckpt"
    corrupt.write_bytes(mlp.read_bytes()[:1000])
    # Right weights, plus an object that only unpickling code could rebuild (a foreign checkpoint)
    foreign = folder / "foreign.ckpt"
    torch.save(
        {
            "state_dict": torch.load(mlp, weights_only=True)["state_dict"],
            "hyper_parameters": argparse.Namespace(lr=0.1),
        },
        foreign,
    )
    return {"mlp_ckpt": mlp, "corrupt_ckpt": corrupt, "foreign_ckpt": foreign}


def cli_args(overrides: list[str], data_root: Path, store: Path, cwd: Path) -> tuple[list, dict]:
    """The arguments and environment of a case's ``digitlab`` command."""
    env = {**os.environ, "DIGITLAB_DATA": str(data_root)}
    env.pop("HYDRA_FULL_ERROR", None)
    base = [
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "data.val_size=40",
        "trainer.enable_progress_bar=false",
        f"logger.tracking_uri=sqlite:///{store}",
        f"logger.artifact_location={store.parent / 'artifacts'}",
        f"hydra.run.dir={cwd}",
        f"hydra.sweep.dir={cwd}",  # the cases with -m: never multirun/ in the working folder
    ]
    flags = [o for o in overrides if o.startswith("-")]  # first: Hydra takes no flag after a word
    return [*flags, *base, *(o for o in overrides if o not in flags)], env


def run_cli(
    overrides: list[str], data_root: Path, store: Path, cwd: Path
) -> subprocess.CompletedProcess:
    args, env = cli_args(overrides, data_root, store, cwd)
    return warm.run("digitlab", *args, env=env, timeout=600)


LOCKED = "store locked by another program"
LOCKED_MID_RUN = "store locked by another program mid-run"
# Another program's write lock on a SQLite file, held for 60 s once the file ``when`` exists.
HOLD_LOCK = """import pathlib, sqlite3, sys, time
while not pathlib.Path(sys.argv[2]).exists():
    time.sleep(0.01)
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(60)
"""


def _against_a_locked_store(
    folder: Path, data_root: Path, migrated_db: Path, mid_run: bool = False
) -> tuple:
    """The command run while another program holds the store's SQLite write lock for 60 s,
    from the start, or (``mid_run``) from when the run's first checkpoint is written:
    (result, seconds from the lock to the command's exit, the store)."""
    store = folder / "mlruns" / "mlflow.db"
    store.parent.mkdir(parents=True)
    shutil.copy(migrated_db, store)
    when = folder / "out" / "checkpoints" / "last.ckpt" if mid_run else store
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(store), str(when)], stdout=subprocess.PIPE, text=True
    )
    try:
        overrides = ["model=mlp", *(["trainer.max_epochs=1000"] if mid_run else [])]
        args, env = cli_args(overrides, data_root, store, folder / "out")
        if not mid_run:
            assert holder.stdout.readline().strip() == "locked"
        process = warm.start("digitlab", *args, env=env)
        if mid_run:
            assert holder.stdout.readline().strip() == "locked"
        # From the lock, or for a lock from the start, from the fork (the fork server may have
        # been starting before).
        locked = time.monotonic()
        try:
            stdout, stderr = process.communicate(timeout=600)
        finally:
            process.kill()
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        return result, time.monotonic() - locked, store
    finally:
        holder.kill()
        holder.wait()


def shared_outcomes(
    tmp_path_factory, worker_id: str, migrated_db: Path, data_root: Path
) -> dict[str, tuple]:
    """:func:`run_outcomes`, once per test run: this file's tests and test_errors_doc.py's (which
    checks docs/errors.md against them, maybe on another xdist worker) read the same outcomes.
    The first worker to ask runs the cases under a lock the other waits on, and leaves them
    pickled beside the workers' temp folders (which the outcomes' stores live in)."""
    if worker_id == "master":  # no xdist: this session alone
        folder = tmp_path_factory.getbasetemp()
    else:  # the workers' temp folders share this run's parent
        folder = tmp_path_factory.getbasetemp().parent
    done = folder / "error-outcomes.pickle"
    with open(folder / "error-outcomes.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            writing = folder / f"error-outcomes-{worker_id}.pickle"
            writing.write_bytes(
                pickle.dumps(run_outcomes(tmp_path_factory, migrated_db, data_root))
            )
            writing.rename(done)  # whole, or not there
    return pickle.loads(done.read_bytes())


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, worker_id, migrated_db, data_root) -> dict[str, tuple]:
    return shared_outcomes(tmp_path_factory, worker_id, migrated_db, data_root)


def run_outcomes(tmp_path_factory, migrated_db: Path, data_root: Path) -> dict[str, tuple]:
    """Run every case at once (one process per case, forked warm, as many at a time as there are
    cores), and meanwhile the locked-store cases, which spend their time waiting on the lock:
    {case: (result, store)}, and for the locked-store cases (result, seconds waited, store)."""
    base = tmp_path_factory.mktemp("errors")
    with ThreadPoolExecutor(max_workers=2) as waiting:
        locked = waiting.submit(_against_a_locked_store, base / "locked", data_root, migrated_db)
        mid_run = waiting.submit(
            _against_a_locked_store, base / "mid_run", data_root, migrated_db, mid_run=True
        )
        return {
            **_run_cases(base, migrated_db),
            LOCKED: locked.result(),
            LOCKED_MID_RUN: mid_run.result(),
        }


def _run_cases(base: Path, migrated_db: Path) -> dict[str, tuple]:
    """Every case of CASES, as many at a time as there are cores."""
    closed = _closed_port()
    fills = {"port": closed.getsockname()[1], **_checkpoints(base)}
    jobs = {}
    for case, (damage, overrides, _) in CASES.items():
        folder = base / re.sub(r"\W+", "_", case)  # Hydra's override grammar rejects ( ) in paths
        root = write_kaggle(write_mnist(folder / "data"))
        # An existing store, as most users have: the cases that get as far as the store then
        # skip MLflow's migration of a new one (seconds each), and must still leave it run-free.
        (folder / "mlruns").mkdir()
        shutil.copy(migrated_db, folder / "mlruns" / "mlflow.db")
        if damage:
            damage(root)
        jobs[case] = (
            [o.format(**fills) for o in overrides],
            root,
            folder / "mlruns" / "mlflow.db",
            folder / "out",
        )
    with closed, ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {case: pool.submit(run_cli, *job) for case, job in jobs.items()}
        return {case: (f.result(), jobs[case][2]) for case, f in futures.items()}


def _no_run_recorded(store: Path) -> bool:
    if not store.exists() or not store.read_bytes().startswith(b"SQLite format 3"):
        return True  # no store, or not a database (the corrupt-store case): nothing recorded
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return not client.search_runs(experiments)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_line_and_exit_1(outcomes, case):
    result, store = outcomes[case]
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("digitlab: error: ")]
    assert len(errors) == 1, output
    print(errors[0])  # shown by `pytest -rP`: the source of docs/errors.md
    for fragment in CASES[case][2]:
        assert fragment in errors[0], errors[0]
    # Nothing half-done: no run in the case's store, and no training started (no checkpoint).
    # For the tracking-server case the local store is not the one the command would have used:
    # there the check that counts is that it stopped before training.
    assert _no_run_recorded(store)
    assert not (store.parent.parent / "out" / "checkpoints").exists(), output


def test_full_trace_on_request(data_root, tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "digitlab", "optimizer.lr=abc", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "DigitlabError" in result.stderr


def test_data_errors_answer_without_importing_torch(tmp_path):
    """The readers validate with numpy; torch (seconds to import) is loaded only for good files."""
    root = write_mnist(tmp_path)
    (root / RAW / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    code = (
        "import sys\n"
        "from digitlab.data.sources import read_data\n"
        "from digitlab.errors import DigitlabError\n"
        "from digitlab.jobs.inputs import data_config\n"
        f"node = data_config('mnist', {str(root)!r})\n"
        "node.source.download = False\n"
        "try:\n    read_data(node)\n"
        "except DigitlabError:\n    print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.stdout.strip() == "False", result.stdout + result.stderr


def test_the_allow_list_matches_whole_module_names():
    from digitlab.config.targets import check_targets, is_allowed
    from digitlab.errors import DigitlabError

    check_targets(
        {"model": {"_target_": "digitlab.models.MLP"}, "optimizer": {"_target_": "torch.optim.SGD"}}
    )
    with pytest.raises(DigitlabError, match="model.layers.0._target_=builtins.exec is not allowed"):
        check_targets({"model": {"layers": [{"_target_": "builtins.exec"}]}})
    assert is_allowed("mypkg.nets.Tiny", ["mypkg"]) and is_allowed("mypkg.nets.Tiny", ["mypkg."])
    assert not is_allowed("mypkg_evil.run", ["mypkg"]) and not is_allowed("digitlabx.run")


@pytest.mark.slow
def test_a_store_locked_by_another_program_is_one_line_within_the_busy_timeout(outcomes):
    """Another program holds the SQLite write lock for 60 s: the command gives up after MLflow's
    busy timeout with one line naming the file, instead of hanging or printing a trace."""
    result, waited, store = outcomes[LOCKED]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("digitlab: error: ")]
    assert f"the MLflow store {store} stayed locked by another program" in line
    # As docs/errors.md states: it retried for 20 s, and gave up within 25 s (a last attempt
    # waits SQLite's 5 s), long before the lock was released.
    stated = int(re.search(r"locked by another program for (\d+) s", line).group(1))
    assert 20 <= stated <= 25, line
    print(f"gave up after {stated} s, exited {waited:.1f} s after it started")
    assert waited < stated + 15, waited  # the rest is the command's own start, on a busy machine
    assert _no_run_recorded(store)


@pytest.mark.slow
def test_a_store_locked_mid_run_is_one_line_within_the_busy_timeout_and_the_run_is_ended_later(
    outcomes,
):
    """The lock is taken once the run's first epoch is checkpointed: the next write waits out
    MLflow's 20 s busy timeout, then the command stops in one line, without waiting a second
    time to end the run; the next command on the store ends it KILLED, resumable."""
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    from digitlab.tracking import store as tracking

    result, waited, store = outcomes[LOCKED_MID_RUN]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("digitlab: error: ")]
    client = MlflowClient(f"sqlite:///{store}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    run_id = run.info.run_id
    assert line == (
        f"digitlab: error: the MLflow store {store} stayed locked by another program while run "
        f"{run_id} was recorded: close what holds it (a program writing to it); the next digitlab "
        f"command on the store marks the run KILLED, then resume={run_id} continues it"
    )
    print(f"exited {waited:.1f} s after the lock was taken")
    assert waited < 35, waited  # one busy timeout (20 s), not two, nor the lock's 60 s
    assert run.info.status == "RUNNING"  # left as the message says
    experiment = client.get_experiment(run.info.experiment_id).name
    tracking.open_experiment(
        OmegaConf.create(
            {  # what the next command does first
                "tracking_uri": f"sqlite:///{store}",
                "artifact_location": str(store.parent / "artifacts"),
                "experiment_name": experiment,
            }
        )
    )
    assert client.get_run(run_id).info.status == "KILLED"
    # resumable: its job folder keeps the run's own last.ckpt (the store is never written to)
    import torch

    from digitlab.tracking.tags import RUN_ID_KEY

    last = store.parent.parent / "out" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)[RUN_ID_KEY] == run_id


def _built_targets(*groups: str) -> set[str]:
    """Every ``_target_`` the files of these config groups name."""
    from omegaconf import OmegaConf

    from digitlab.config import CONF_DIR
    from digitlab.config.targets import _targets

    return {
        target
        for group in groups
        for path in (CONF_DIR / group).glob("*.yaml")
        for _, target in _targets(OmegaConf.load(path))
    }


def test_added_keys_are_checked_against_the_arguments_the_source_declares():
    """The argument names a target takes before torch is imported (what `+key` and a network's
    keys are checked against: digitlab's networks' schema, else read from the source) are those
    inspect.signature gives, for every target the configs name; None where the source cannot
    tell (**kwargs)."""
    import inspect

    from hydra.utils import get_object

    from digitlab.config.spec import NETWORKS
    from digitlab.config.spec import arguments as argument_names

    # What the network, optimizer, scheduler, data source and Trainer take is read in full; a
    # callback may inherit its __init__ (None: not checked early), but is never read wrong.
    built = {
        *_built_targets("model", "optimizer", "scheduler", "data"),
        "lightning.pytorch.Trainer",
    }
    assert {f"digitlab.models.{name}" for name in NETWORKS} <= built  # each network's schema
    assert {
        "torch.optim.SGD",
        "digitlab.models.LeNet",
        "digitlab.data.sources.load_idx",
        "torch.optim.lr_scheduler.OneCycleLR",
    } <= built
    for target in sorted(built | _built_targets("callbacks")):
        parameters = inspect.signature(get_object(target)).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in parameters):
            expected = None
        else:
            expected = {
                p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            }
        names = argument_names(target)
        read = None if names is None else set(names)
        assert read == expected or (read is None and target not in built), target
    assert argument_names("digitlab.models.NoSuchNet") is None
    assert argument_names("nosuchpackage.Net") is None


LENET = "digitlab.models.LeNet"


@pytest.mark.parametrize(
    "config, refused",
    [
        ({"trainer": {"devices": 0}}, "trainer.devices=0 is invalid"),
        ({"trainer": {"devices": "0"}}, "trainer.devices='0' is invalid"),
        ({"trainer": {"devices": []}}, "trainer.devices=[] is invalid"),
        ({"trainer": {"devices": [-1]}}, "trainer.devices=[-1] is invalid"),
        ({"trainer": {"devices": "one"}}, "trainer.devices='one' is invalid"),
        ({"seed": 2**32}, "seed=4294967296 is invalid"),
        ({"seed": True}, "seed=True is invalid"),
        ({"data": {"split_seed": -5}}, "data.split_seed=-5 is invalid"),
        ({"model": {"_target_": LENET, "channels": [8, 0]}}, "model.channels=[8, 0] is invalid"),
        ({"model": {"_target_": LENET, "hidden": 500}}, "model.hidden=500 is invalid"),
        ({"model": {"_target_": LENET, "kernel_size": 2.5}}, "model.kernel_size=2.5 is invalid"),
        (
            {"optimizer": {"betas": [0.9, float("nan")]}},
            "optimizer.betas.1=nan is invalid: it must be a finite number",
        ),
        (
            {"scheduler": {"max_lr": float("-inf")}},
            "scheduler.max_lr=-inf is invalid: it must be a finite number",
        ),
        (
            {
                "trainer": {"devices": 2},
                "seed": 0,
                "data": {"split_seed": None, "std": 1.0},
                "model": {"_target_": LENET, "channels": [1], "hidden": [], "kernel_size": 3},
            },
            None,
        ),
        # A network of the user's (trusted_targets) may mean other things by these names.
        (
            {"model": {"_target_": "usernets.Tiny", "hidden": 16}, "trusted_targets": ["usernets"]},
            None,
        ),
        ({"trainer": {"devices": [0, 1]}, "seed": 2**32 - 1}, None),
        *(({"trainer": {"devices": d}}, None) for d in ("auto", -1, "0,1", "2", "-1")),
    ],
)
def test_value_ranges(config, refused):
    """What numpy's and torch's seeding, Lightning's devices and the networks' widths accept
    (checked in-process: test_bad_input_gets_one_line_and_exit_1 runs the command line)."""
    from omegaconf import OmegaConf

    from digitlab.config.spec import check_config
    from digitlab.errors import DigitlabError

    recipe = {  # a valid run recipe, which each case changes
        "model": {"_target_": "digitlab.models.MLP", "hidden": [8]},
        "data": {"scale": 255.0, "mean": 0.0, "std": 1.0},
    }
    cfg = OmegaConf.merge(recipe, config)
    if refused is None:
        check_config(cfg)
    else:
        with pytest.raises(DigitlabError) as e:
            check_config(cfg)
        assert str(e.value).startswith(refused), e.value


def test_a_file_that_is_no_picture_names_the_formats_that_are_read(tmp_path):
    """Each format the message names is read (a digit in it found), and the message says so."""
    from PIL import Image

    from digitlab.serving.mnistify import read_digit

    digit = np.zeros((40, 40), np.uint8)
    digit[10:30, 18:22] = 255
    formats = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "BMP": "bmp", "WebP": "webp"}
    for name, suffix in {**formats, "TIFF": "tif"}.items():
        path = tmp_path / f"one.{suffix}"
        Image.fromarray(digit).save(path, name.upper())
        assert read_digit(path).shape == (28, 28), name
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    with pytest.raises(DigitlabError) as refused:
        read_digit(notes)
    assert str(refused.value) == (
        f"{notes}: not a readable picture; give pictures of digits as PNG, JPEG, GIF, BMP, WebP "
        "or TIFF files"
    )

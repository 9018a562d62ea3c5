"""The command line: fast answers without torch, one-line errors, and a full run's summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

import warm
from digitlab.config import CONF_DIR, config_groups


def digitlab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "digitlab", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_cfg_job_prints_the_config_without_importing_torch():
    code = (
        "import sys, runpy\n"
        "sys.argv = ['digitlab', 'model=mlp', '--cfg', 'job']\n"
        "try:\n    runpy.run_module('digitlab', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('IMPORTED',\n"
        "      sorted(m for m in ('torch', 'lightning', 'mlflow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "_target_: digitlab.models.MLP" in out.stdout
    assert "IMPORTED []" in out.stdout


def test_help_lists_the_config_groups():
    out = digitlab("--help")
    assert out.returncode == 0
    for group, options in config_groups(CONF_DIR).items():  # every group, as conf/ has it
        assert f"{group}: {', '.join(options)}" in out.stdout


def test_help_shows_the_config_composed_with_the_overrides():
    out = digitlab("model=mlp", "optimizer=adam", "--help")
    assert out.returncode == 0
    assert "_target_: digitlab.models.MLP" in out.stdout
    assert "_target_: torch.optim.Adam" in out.stdout
    bad = digitlab("model=resnet", "--help")
    assert bad.returncode == 1 and "model=resnet is not an option of model" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_help_lists_exactly_the_groups_and_options_hydra_finds():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from digitlab.config import CONF_DIR, config_groups

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        groups = {g: sorted(loader.get_group_options(g)) for g in config_groups(CONF_DIR)}
        top = {g for g in loader.list_groups("") if g != "hydra"}
    assert groups == config_groups(CONF_DIR)
    assert top == {g.split("/")[0] for g in groups}


def test_unknown_option_lists_the_valid_ones_without_a_trace():
    out = digitlab("model=resnet")
    assert out.returncode == 1
    assert out.stderr == (
        "digitlab: error: model=resnet is not an option of model: did you mean lenet or lenet5? "
        "(options: convnet, lenet, lenet5, lenet_small, mlp)\n"
    )


def test_wrong_value_type_is_one_line(tmp_path):
    out = digitlab("data.batch_size=abc", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "digitlab: error: data.batch_size='abc' is invalid: it must be an integer >= 1"
    )
    # The bad-input cases of test_errors.py run forked from a warm process (tests/warm.py):
    # it must answer exactly as a new interpreter does.
    forked = warm.run("digitlab", "data.batch_size=abc", f"hydra.run.dir={tmp_path}")
    assert (forked.returncode, forked.stdout, forked.stderr) == (1, out.stdout, out.stderr)


@pytest.mark.slow
def test_a_full_run_from_the_command_line(fast, store, tmp_path):
    """A new interpreter, as a user's command: its output, what it logged, its fast exit, and no
    deprecation warning from any dependency (progress bar, pictures and model logging on)."""
    out = digitlab(
        "model=mlp",
        *fast,
        "trainer.enable_progress_bar=true",
        "figures.enabled=true",
        "logger.log_model=true",
        f"hydra.run.dir={tmp_path / 'job'}",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    output = out.stdout + out.stderr
    assert not re.search(r"Deprecat|FutureWarning|deprecated", output), output[-3000:]
    assert re.search(r"^epoch 1/1  train loss", out.stdout, re.M), out.stdout
    assert "digitlab: mlp-mnist-sgd-s42 finished in" in out.stdout
    ui = f"open the UI: uv run digitlab-ui --backend-store-uri {store['tracking_uri']}"
    assert ui in out.stdout
    client = MlflowClient(store["tracking_uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("digitlab").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_id in out.stdout
    assert run.data.tags["choice.model"] == "mlp"
    assert run.data.tags["choice.optimizer"] == "sgd"
    # The summary line carries the run's own test accuracy, and best.ckpt reached the store
    # before the command's fast exit (no interpreter teardown): it downloads and loads whole.
    shown = re.search(r"test/acc (\d\.\d{4})", out.stdout)
    assert shown and float(shown.group(1)) == round(run.data.metrics["test/acc"], 4)
    logged = client.download_artifacts(run.info.run_id, "checkpoints/best.ckpt", str(tmp_path))
    local = tmp_path / "job" / "checkpoints" / "best.ckpt"
    assert Path(logged).read_bytes() == local.read_bytes()
    assert torch.load(logged, weights_only=True)["state_dict"]


# A misspelt word of each kind, one line each, with the word and the closest valid ones.
MISSPELT = {
    "preset": (
        ["experiment=fastt"],
        ["experiment=fastt is not an option of experiment", "did you mean fast?"],
    ),
    "option": (
        ["model=lenett"],
        ["model=lenett is not an option of model", "did you mean lenet or lenet5?"],
    ),
    "option in a sweep": (["-m", "model=mlp,lenett"], ["model=lenett is not an option of model"]),
    "hydra option": (
        ["hydra/launcher=paralel"],
        ["hydra/launcher=paralel is not an option", "did you mean parallel?"],
    ),
    "key": (
        ["optimizer.lrr=0.1"],
        ["optimizer.lrr is not a key of the config", "did you mean optimizer.lr?"],
    ),
    "group of a key": (
        ["optimzer.lr=0.1"],
        ["optimzer.lr is not a key of the config", "did you mean optimizer.lr?"],
    ),
    "key of one option of a sweep": (
        ["-m", "model=lenet,mlp", "model.kernel_size=3"],
        ["model.kernel_size is not a key of the config with model=mlp"],
    ),
    "added key no constructor takes": (
        ["+optimizer.lrr=0.1"],
        ["+optimizer.lrr: torch.optim.SGD takes no argument lrr", "did you mean optimizer.lr?"],
    ),
    "added argument a network lacks": (
        ["model=mlp", "+model.kernel_size=3"],
        ["+model.kernel_size: digitlab.models.MLP takes no argument kernel_size"],
    ),
    "added key already there": (
        ["+optimizer.lr=0.1"],
        ["+optimizer.lr: optimizer.lr is already", "optimizer.lr=0.1"],
    ),
    "no option": (
        ["scheduler=null"],
        ["scheduler=null is not an option of scheduler", "~scheduler"],
    ),
    "sweep without -m": (["model=mlp,lenet"], ["model=mlp,lenet is a sweep", "-m"]),
    "override Hydra cannot read": (
        ["model.channels=[1,"],
        ["cannot read the override", "model.channels=[1,"],
    ),
    "unwritable output folder": (
        ["hydra.run.dir=/proc"],
        ["output folder /proc cannot be written", "hydra.run.dir"],
    ),
    "output folder under a file": (
        ["hydra.run.dir=/dev/null/out"],
        ["/dev/null is not a folder", "hydra.run.dir"],
    ),
    "option with --help": (["--help", "model=lenett"], ["model=lenett is not an option of model"]),
    "option with --cfg job": (["--cfg", "job", "experiment=fastt"], ["experiment=fastt is not"]),
    "override written as a flag": (
        ["--model=mlp"],
        ["--model=mlp: Hydra overrides have no dashes: model=mlp"],
    ),
    "key of a nested node": (
        ["max_epochs=1"],
        ["max_epochs is not a key of the config: did you mean trainer.max_epochs?"],
    ),
    "--cfg job of a sweep": (
        ["-m", "--cfg", "job", "model=mlp,lenet"],
        ["--cfg job prints one job's config, -m runs several: drop -m"],
    ),
}
# Each command in turn in one new interpreter: its exit status, stderr and seconds, and at the
# end whether torch was imported.
RUN_EACH = """import contextlib, io, json, runpy, sys, time
results = []
for argv in json.loads(sys.argv[1]):
    sys.argv, err, code = ['digitlab', *argv], io.StringIO(), 0
    started = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            runpy.run_module('digitlab', run_name='__main__')
        except SystemExit as e:
            code = e.code
    results.append((code, err.getvalue(), time.perf_counter() - started))
print(json.dumps({'results': results, 'torch': 'torch' in sys.modules}))
"""


def test_misspelt_words_stop_in_one_line_before_torch_is_imported(tmp_path):
    """Every misspelt preset, option, key or added key, a sweep naming one, and an output folder
    that cannot be written: one line naming the word and the closest valid ones, exit 1, within
    about a second, before torch is imported, and no output folder, store or sweep job made."""
    import json

    # Should a check miss, the command stops at the missing data rather than train.
    where = [
        f"hydra.run.dir={tmp_path / 'out'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"logger.tracking_uri=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        f"data.root={tmp_path / 'nodata'}",
        "data.source.download=false",
    ]
    commands = []
    for argv, _ in MISSPELT.values():  # Hydra's flags first, then its overrides
        flags = 0
        while flags < len(argv) and argv[flags].startswith("-"):
            flags += 2 if argv[flags] == "--cfg" else 1
        ours = [w for w in where if w.partition("=")[0] not in {a.partition("=")[0] for a in argv}]
        commands.append([*argv[:flags], *ours, *argv[flags:]])
    out = subprocess.run(
        [sys.executable, "-c", RUN_EACH, json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    answer = json.loads(out.stdout.splitlines()[-1])
    for (case, (_, fragments)), (code, stderr, seconds) in zip(
        MISSPELT.items(), answer["results"], strict=True
    ):
        assert code == 1, (case, stderr)
        (line,) = stderr.splitlines() or [""]
        assert line.startswith("digitlab: error: "), (case, stderr)
        for fragment in fragments:
            assert fragment in line, (case, line)
        assert seconds < 3, (case, seconds)  # about a second (0.1-0.3 s warm; a busy machine)
        print(f"{seconds:.2f} s  {line}")
    assert answer["torch"] is False
    assert not any(tmp_path.iterdir())  # no output folder, no store, no sweep folder


def test_words_that_exist_pass_the_command_line_check(tmp_path):
    """What the README shows, sweeps, presets, Hydra's groups and keys a user really adds."""
    from hydra.core.global_hydra import GlobalHydra

    from digitlab.config import CONF_DIR
    from digitlab.config.command import check_command_line

    GlobalHydra.instance().clear()
    run_dir = f"hydra.run.dir={tmp_path / 'new' / 'out'}"
    (tmp_path / "conf" / "model").mkdir(parents=True)  # a user's own options (test_extension.py)
    (tmp_path / "conf" / "model" / "tiny.yaml").write_text("_target_: usernets.Tiny\nwidth: 8\n")
    for argv in (
        [],
        [run_dir],
        ["model=mlp", "optimizer=adam", "optimizer.lr=1e-3", "trainer.max_epochs=5"],
        ["data=kaggle", "model=lenet_small"],
        ["scheduler=cosine", "scheduler.interval=step"],
        ["-m", "model=mlp,lenet", "optimizer.lr=0.05,0.1"],
        ["--cfg", "job"],
        ["--help"],
        ["-m", "model=lenet,mlp", "model.hidden=[32]", "seed=range(1,3)"],
        ["experiment=fast"],
        ["experiment=best"],
        ["figures=off", "~scheduler"],
        [
            "-m",
            "experiment=search",
            "hydra/launcher=parallel",
            "hydra.sweeper.n_trials=2",
            "optimizer.lr=interval(0.01,0.1)",
            "model=choice(lenet,lenet5)",
        ],
        ["+trainer.accumulate_grad_batches=4", "data.steps_per_call=1"],
        ["+optimizer.dampening=0.1", "++optimizer.lr=0.2", "++optimizer.foreach=false"],
        ["model.channels.0=8", "~callbacks.throughput", "hydra.job.chdir=true"],
        ["data.source.download=false", "data.source.mirrors=[http://127.0.0.1:1/]"],
        [
            "+callbacks.early_stop._target_=lightning.pytorch.callbacks.EarlyStopping",
            "+callbacks.early_stop.monitor=val/acc",
        ],  # conf/callbacks/default.yaml's example
        [
            "-m",
            "experiment=search",
            "hydra/sweeper/pruner=none",  # test_search.py's
            "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
            "+hydra.sweeper.pruner.upper=-1.0",
        ],
        [
            "trainer=ddp",
            f'hydra.run.dir="{tmp_path}"',
            "hydra.job.name=train_ddp_process_1",
            "hydra.output_subdir=null",
        ],  # what Lightning adds for DDP's second rank
        ["model=lenett", "--config-name", "other"],  # another config: Hydra answers
        [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "model=tiny", "model.width=4"],
    ):
        check_command_line(argv, CONF_DIR)
    assert not (tmp_path / "new").exists()  # checked, not created (Hydra creates it)
    assert not GlobalHydra.instance().is_initialized()


def test_a_flag_after_the_overrides_is_one_line_saying_where_it_goes():
    from digitlab.config.command import check_command_line
    from digitlab.errors import DigitlabError

    with pytest.raises(
        DigitlabError,
        match=r"^-m must come before the overrides: digitlab -m "
        r"trainer.max_epochs=1 model=mlp,lenet$",
    ):
        check_command_line(["trainer.max_epochs=1", "-m", "model=mlp,lenet"], CONF_DIR)


def test_an_override_written_as_a_flag_is_one_line_without_the_dashes():
    from digitlab.config.command import check_command_line
    from digitlab.errors import DigitlabError

    for argv, written in (
        (["--model=mlp"], "--model=mlp"),
        (["--optimizer.lr", "0.1", "model=mlp"], "--optimizer.lr 0.1"),
    ):
        bare = written.lstrip("-").replace(" ", "=")
        with pytest.raises(DigitlabError) as refused:
            check_command_line(argv, CONF_DIR)
        assert str(refused.value) == f"{written}: Hydra overrides have no dashes: {bare}"


@pytest.mark.parametrize("program", ["predict", "register", "serve", "ui"])
def test_help_of_the_other_commands_is_plain_text(program):
    """--help shows words, not the docstrings' reStructuredText literals (``--data NAME``)."""
    shown = warm.run(f"digitlab.cli.{program}", "--help")
    assert shown.returncode == 0 and "usage: digitlab-" in shown.stdout, shown.stderr[-2000:]
    assert "`" not in shown.stdout, shown.stdout

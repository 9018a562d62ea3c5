"""Ensembles in digitlab-predict: several runs or a sweep's parent, members of other sizes and
normalisations, the mean and the vote, missing members, and the ensemble's own MLflow run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

import warm
from conftest import N_TEST, copy_store, fast_config, synthetic_digits
from digitlab.errors import DigitlabError
from digitlab.jobs.predict import Prediction, predict
from digitlab.serving.ensemble import combine
from digitlab.training.run import train
from test_sweep import runs_of, sweep

MNIST_TEST_LABELS = synthetic_digits(N_TEST, 1)[1]  # what conftest's write_mnist wrote as t10k


@pytest.fixture(scope="module")
def committee(tmp_path_factory, data_root, migrated_db) -> SimpleNamespace:
    """A store with a real 2-seed sweep of MLPs (28 px) plus a KILLED child, as a pruned trial
    leaves, and one LeNet-5 run (32 px, its own normalisation) outside the sweep."""
    base = tmp_path_factory.mktemp("committee")
    store = copy_store(base, migrated_db)
    sweep(base, data_root, store, "model=mlp", "seed=1,2", checkpoints=True)
    client, parent, children = runs_of(store)
    children.sort(key=lambda c: int(c.data.tags["digitlab.job_num"]))
    pruned = client.create_run(
        parent.info.experiment_id,
        run_name="pruned-trial",
        tags={"mlflow.parentRunId": parent.info.run_id},
    )
    client.set_terminated(pruned.info.run_id, "KILLED")
    cfg = fast_config(data_root, store, "model=lenet5", "data.mean=0.5", "data.std=0.5", "seed=3")
    lenet5 = train(cfg, output_dir=base / "lenet5")
    return SimpleNamespace(
        uri=store["tracking_uri"],
        parent=parent.info.run_id,
        pruned=pruned.info.run_id,
        mlps=[c.info.run_id for c in children],
        lenet5=lenet5["run_id"],
        lenet5_checkpoint=lenet5["best_checkpoint"],
        root=data_root,
    )


def run_predict(committee, folder, runs, data="mnist", **options) -> Prediction:
    """digitlab-predict in this process, writing into ``folder`` (made here)."""
    folder.mkdir(parents=True, exist_ok=True)
    return predict(
        run_id=runs,
        data=data,
        root=committee.root,
        out=folder / "p.npy",
        tracking_uri=committee.uri,
        **options,
    )


def single(committee, folder, run_id, data="mnist") -> np.ndarray:
    """One run's probabilities, as digitlab-predict --run RUN_ID writes them."""
    return np.load(run_predict(committee, folder / run_id, run_id, data).probabilities)


# The committee (a sweep and a LeNet-5 run) takes tens of seconds to train, once per module.
@pytest.mark.slow
def test_an_ensemble_of_two_runs_is_the_mean_of_their_probabilities(committee, tmp_path):
    alone = [single(committee, tmp_path, run_id) for run_id in committee.mlps]
    assert not np.allclose(alone[0], alone[1], atol=1e-3)  # two seeds: two different members
    out = run_predict(committee, tmp_path / "ensemble", committee.mlps)
    probs = np.load(out.probabilities)
    assert probs.shape == (N_TEST, 10)
    assert np.abs(probs - (alone[0] + alone[1]) / 2).max() <= 1e-6
    digits = ((alone[0] + alone[1]) / 2).argmax(1)
    assert out.accuracy == pytest.approx((digits == MNIST_TEST_LABELS).mean())
    assert out.members == committee.mlps and out.submission is None


@pytest.mark.slow
def test_a_sweep_parent_expands_to_its_finished_children(committee, tmp_path, capsys):
    out = run_predict(committee, tmp_path / "parent", committee.parent)
    assert sorted(out.members) == sorted(committee.mlps)  # not the KILLED child, not the parent
    line = f"sweep run {committee.parent}: 2 finished children are members"
    printed = capsys.readouterr().out
    assert f"{line}; not finished, left out: {committee.pruned} (KILLED)" in printed
    explicit = run_predict(committee, tmp_path / "explicit", committee.mlps)
    assert np.array_equal(np.load(out.probabilities), np.load(explicit.probabilities))
    run = MlflowClient(committee.uri).get_run(out.run_id)
    assert run.data.tags["digitlab.ensemble.sweeps"] == committee.parent


@pytest.mark.slow
def test_a_lenet5_member_at_32_px_joins_a_28_px_member(committee, tmp_path):
    members = [committee.mlps[0], committee.lenet5]
    alone = [single(committee, tmp_path, run_id) for run_id in members]
    out = run_predict(committee, tmp_path / "mixed", members)
    assert np.abs(np.load(out.probabilities) - (alone[0] + alone[1]) / 2).max() <= 1e-6
    client = MlflowClient(committee.uri)
    (tmp_path / "table").mkdir()
    table = client.download_artifacts(out.run_id, "ensemble/members.csv", str(tmp_path / "table"))
    rows = [line.split(",") for line in open(table).read().splitlines()]
    assert rows[0][:6] == ["member", "model", "input_size", "scale", "mean", "std"]
    assert [r[:6] for r in rows[1:]] == [
        [committee.mlps[0], "MLP", "28", "255.0", "0.1307", "0.3081"],
        [committee.lenet5, "LeNet", "32", "255.0", "0.5", "0.5"],
    ]


@pytest.mark.slow
def test_majority_vote_matches_a_recomputation(committee, tmp_path):
    members = [*committee.mlps, committee.lenet5]
    alone = np.stack([single(committee, tmp_path, run_id, "kaggle") for run_id in members])
    out = run_predict(committee, tmp_path / "vote", members, "kaggle", method="vote")
    ballots = alone.argmax(2)  # (members, rows)
    votes = np.stack([(ballots == digit).sum(0) for digit in range(10)], axis=1)
    mean = alone.mean(0)
    # One-epoch members disagree: some rows are ties, and on some the vote overrules the mean.
    assert ((votes == votes.max(1, keepdims=True)).sum(1) > 1).any()
    assert (votes.argmax(1) != mean.argmax(1)).any()
    expected = [
        max(np.flatnonzero(v == v.max()), key=lambda d: m[d])
        for v, m in zip(votes, mean, strict=True)
    ]
    lines = out.submission.read_text().splitlines()[1:]
    assert [int(line.split(",")[1]) for line in lines] == expected
    assert np.array_equal(np.load(out.probabilities), (votes / 3).astype(np.float32))


def test_vote_takes_the_majority_over_the_mean_and_breaks_ties_by_the_mean():
    """Row 0: two members mildly for 1, one sure of 2 (the mean says 2). Row 1: one vote each
    for 3, 4 and 5; the mean favours 4."""
    member_probs = np.full((3, 2, 10), 0.01, dtype=np.float32)
    for member, (first, second) in enumerate(
        [((1, 0.5), (3, 0.5)), ((1, 0.5), (4, 0.9)), ((2, 0.99), (5, 0.6))]
    ):
        member_probs[member, 0, first[0]] = first[1]
        member_probs[member, 1, second[0]] = second[1]
    assert combine(member_probs, "mean")[1].tolist() == [2, 4]
    shares, digits = combine(member_probs, "vote")
    assert digits.tolist() == [1, 4]
    assert (
        shares[0, 1] == pytest.approx(2 / 3)
        and shares[1, [3, 4, 5]].tolist() == [pytest.approx(1 / 3)] * 3
    )


@pytest.mark.slow
def test_a_missing_member_is_one_line_naming_it(committee, tmp_path):
    """The KILLED child logged no checkpoint: one line naming it, exit 1, no ensemble run."""
    done = warm.run(
        "digitlab.cli.predict",
        "--run",
        committee.mlps[0],
        committee.pruned,
        "--data",
        "mnist",
        "--root",
        str(committee.root),
        "--tracking-uri",
        committee.uri,
        "--out",
        str(tmp_path / "p.npy"),
    )
    assert done.returncode == 1
    assert done.stderr.startswith("digitlab: error: ") and done.stderr.count("\n") == 1
    assert f"ensemble member {committee.pruned}: run {committee.pruned} logged no " in done.stderr
    assert "--skip-missing" in done.stderr and not (tmp_path / "p.npy").exists()
    ensembles = MlflowClient(committee.uri).get_experiment_by_name("ensembles")
    runs = MlflowClient(committee.uri).search_runs([ensembles.experiment_id]) if ensembles else []
    assert not [r for r in runs if committee.pruned in r.data.tags["digitlab.ensemble.members"]]


@pytest.mark.slow
def test_skip_missing_leaves_out_missing_and_refused_members(committee, tmp_path, capsys):
    crafted = torch.load(committee.lenet5_checkpoint, weights_only=True)
    crafted["hyper_parameters"]["config"]["model"] = {"_target_": "os.system"}
    torch.save(crafted, tmp_path / "crafted.ckpt")
    unknown = "0" * 32
    runs = [committee.mlps[0], committee.pruned, unknown]
    with pytest.raises(
        DigitlabError,
        match=f"ensemble member {tmp_path / 'crafted.ckpt'}: .* "
        "names model._target_=os.system, which is not trusted code",
    ):
        predict(
            run_id=committee.mlps[0],
            checkpoint=tmp_path / "crafted.ckpt",
            tracking_uri=committee.uri,
            data="mnist",
            root=committee.root,
        )
    out = predict(
        run_id=runs,
        checkpoint=tmp_path / "crafted.ckpt",
        data="mnist",
        root=committee.root,
        out=tmp_path / "p.npy",
        tracking_uri=committee.uri,
        skip_missing=True,
    )
    skipped = [line for line in capsys.readouterr().err.splitlines() if "skipped member" in line]
    assert [line.split(":")[1].split()[-1] for line in skipped] == [
        unknown,
        committee.pruned,
        str(tmp_path / "crafted.ckpt"),
    ]
    assert "no MLflow run" in skipped[0] and "logged no checkpoint" in skipped[1]
    assert out.members == [committee.mlps[0]] and len(out.skipped) == 3
    with pytest.raises(DigitlabError, match="no ensemble member is left"):
        predict(
            run_id=[committee.pruned, unknown],
            data="mnist",
            root=committee.root,
            tracking_uri=committee.uri,
            skip_missing=True,
        )


@pytest.mark.slow
def test_the_ensemble_run_records_members_method_accuracy_and_submission(committee, tmp_path):
    done = warm.run(
        "digitlab.cli.predict",
        "--run",
        committee.mlps[0],
        "--run",
        committee.mlps[1],
        "--data",
        "kaggle",
        "--root",
        str(committee.root),
        "--tracking-uri",
        committee.uri,
        "--out",
        str(tmp_path / "kaggle" / "p.csv"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = done.stdout.splitlines()[0]
    assert summary.startswith("digitlab: ensemble of 2 members (mean), MLflow run ")
    client = MlflowClient(committee.uri)
    run = client.get_run(summary.rsplit(" ", 1)[1])
    assert client.get_experiment(run.info.experiment_id).name == "ensembles"
    assert run.info.status == "FINISHED"
    assert run.data.tags["digitlab.ensemble.members"] == " ".join(committee.mlps)
    assert run.data.params["ensemble.method"] == "mean"
    assert run.data.params["ensemble.members"] == "2"
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "predictions")}
    assert logged == {"predictions/p.csv", "predictions/submission.csv"}
    folder = client.download_artifacts(run.info.run_id, "predictions", str(tmp_path / "logged"))
    assert (
        open(f"{folder}/submission.csv").read()
        == (tmp_path / "kaggle" / "submission.csv").read_text()
    )

    scored = run_predict(committee, tmp_path / "mnist", committee.mlps, method="vote")
    run = client.get_run(scored.run_id)
    assert run.data.params["ensemble.method"] == "vote"
    assert run.data.metrics["accuracy"] == pytest.approx(scored.accuracy)
    own = [run_predict(committee, tmp_path / r, r).accuracy for r in committee.mlps]
    assert run.data.metrics["members/best_accuracy"] == pytest.approx(max(own))
    assert run.data.metrics["members/mean_accuracy"] == pytest.approx(sum(own) / 2)


@pytest.mark.slow
def test_holdout_scores_the_rows_kaggle_runs_held_out_and_refuses_different_rows(
    data_root, store, tmp_path
):
    # Kaggle's test.csv has no labels: a seed sweep with one data.split_seed holds the same
    # data.test_size rows of train.csv out of every member, and --data holdout scores on them.
    from digitlab.data.datamodule import DigitDataModule
    from digitlab.data.sources import load_kaggle
    from digitlab.jobs.inputs import holdout_images

    def kaggle_run(seed: int, split_seed: int) -> str:  # 40 validation rows, 30 test rows
        cfg = fast_config(
            data_root,
            store,
            "data=kaggle",
            "model=mlp",
            "data.test_size=30",
            f"data.split_seed={split_seed}",
            f"seed={seed}",
        )
        return train(cfg, output_dir=tmp_path / f"s{seed}-{split_seed}")["run_id"]

    first, second, elsewhere = kaggle_run(1, 0), kaggle_run(2, 0), kaggle_run(3, 1)
    client = MlflowClient(store["tracking_uri"])
    uri = store["tracking_uri"]

    def holdout(runs, name):
        out = tmp_path / name / "p.npy"
        return predict(run_id=runs, data="holdout", out=out, root=data_root, tracking_uri=uri)

    for run_id in (first, second):  # alone: the run's own test/acc, on its own 30 rows
        alone = holdout(run_id, run_id)
        assert alone.n == 30 and alone.submission is None
        assert alone.accuracy == pytest.approx(client.get_run(run_id).data.metrics["test/acc"])
    both = holdout([first, second], "both")
    mean = (np.load(tmp_path / first / "p.npy") + np.load(tmp_path / second / "p.npy")) / 2
    assert np.abs(np.load(both.probabilities) - mean).max() <= 1e-6
    run = client.get_run(both.run_id)
    assert run.data.params["ensemble.data"] == "holdout"
    assert run.data.metrics["accuracy"] == pytest.approx(both.accuracy)
    different = f"{first} and {elsewhere} held out different test rows"
    with pytest.raises(DigitlabError, match=different):
        holdout([first, elsewhere], "mixed")

    # The rows are training's own test split, not its validation rows or another cut.
    config = {
        "seed": 1,
        "data": {
            "source": {
                "_target_": "digitlab.data.sources.load_kaggle",
                "root": str(data_root),
                "file": "train.csv",
            },
            "val_size": 40,
            "test_size": 30,
            "split_seed": 0,
        },
    }
    images, labels = holdout_images([("run", config)], data_root)  # this command's --root
    split = DigitDataModule(
        lambda: load_kaggle(data_root), val_size=40, test_size=30, split_seed=0
    ).split()
    assert torch.equal(labels, split["test"][1]) and torch.equal(images, split["test"][0])
    assert not torch.equal(images, split["val"][0][:30])


def test_holdout_refuses_a_config_naming_code_before_running_it(tmp_path):
    from digitlab.jobs.inputs import holdout_images

    ran = tmp_path / "ran"
    config = {
        "seed": 1,
        "data": {"val_size": 40, "source": {"_target_": "os.system", "command": f"touch {ran}"}},
    }
    with pytest.raises(
        DigitlabError,
        match="crafted.ckpt's run config names "
        "data.source._target_=os.system, which is not trusted code",
    ):
        holdout_images([("crafted.ckpt", config)], None)
    assert not ran.exists()
    with pytest.raises(DigitlabError, match="crafted.ckpt's run config lacks data.source"):
        holdout_images([("crafted.ckpt", {"seed": 1, "data": {"val_size": 40}})], None)

"""From a checkpoint to a network, safely: weights-only unpickling, an allow-list for the code its
config names, strict weights, and one-line errors for bad files. Predict, resume and the tests
all come through here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digitlab.data.classes import run_classes
from digitlab.errors import DigitlabError
from digitlab.tracking.tags import CHECKPOINT_DIR_TAG, RUN_ID_KEY


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at ``path``, read on the CPU with ``torch.load(weights_only=True)``.

    Never unpickles code: a file holding anything but tensors and plain values is refused.
    Raises DigitlabError, in one line, for a missing, corrupt, truncated or foreign file.
    """
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise DigitlabError(f"checkpoint {path} does not exist: give the path of a .ckpt file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (
        Exception
    ) as e:  # torch raises many types for bad bytes: zip, pickle, EOF, storage errors
        if "Unsupported global" in str(e):  # a pickled class or function, not corrupt bytes
            raise DigitlabError(
                f"{path} holds Python objects, not only tensors and plain values; refused for "
                "safety (checkpoints load with weights_only=True): use a checkpoint digitlab wrote"
            ) from None
        raise DigitlabError(
            f"{path} is not a readable checkpoint: it is corrupt or truncated "
            f"({type(e).__name__}); use another .ckpt file, e.g. a run's checkpoints/last.ckpt"
        ) from None
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise DigitlabError(
            f"{path} is not a Lightning checkpoint (it has no state_dict): use a .ckpt file "
            "written by digitlab training"
        )
    return dict(checkpoint)


def net_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The network's own weights: a LightningModule state_dict's ``net.*`` entries, unprefixed."""
    if any(k.startswith("net.") for k in state_dict):
        return {k.removeprefix("net."): v for k, v in state_dict.items() if k.startswith("net.")}
    return dict(state_dict)


def load_net_weights(
    net, state_dict: Mapping[str, Any], source: str | Path = "the checkpoint"
) -> None:
    """Load ``state_dict`` (a module's or a network's) into ``net``, strictly.

    Raises DigitlabError naming the first mismatch when the checkpoint was written for another
    architecture (other layer sizes, other layers), instead of PyTorch's multi-line report.
    """
    weights = net_state_dict(state_dict)
    own = net.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [k for k in own if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        if shapes:
            k = shapes[0]
            detail = f"{k} is {list(weights[k].shape)} there but {list(own[k].shape)} here"
        elif missing:
            detail = f"it lacks {missing[0]}" + (
                f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            )
        else:
            detail = f"it has extra {unexpected[0]}"
        raise DigitlabError(
            f"{source} holds weights of another architecture than the {type(net).__name__} "
            f"configured ({detail}): use the model config it was trained with (the run's "
            "config.yaml) or another checkpoint"
        )
    net.load_state_dict(weights)


def checkpoint_config(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The resolved run config saved in a digitlab checkpoint (the recipe to rebuild its net)."""
    hparams = checkpoint.get("hyper_parameters") or {}
    config = hparams.get("config") if isinstance(hparams, Mapping) else None
    return dict(config) if isinstance(config, Mapping) else None


def build_network(
    model: Mapping[str, Any],
    trusted: Iterable[str] = (),
    source: Any = "config",
    num_classes: int = 10,
):
    """The network ``model`` (a saved ``model`` config node, untrusted) describes, with
    ``num_classes`` outputs, once its one ``_target_`` resolves to a network digitlab builds (or
    one defined in a ``trusted`` package) and its arguments are plain values
    (:func:`digitlab.config.targets.build`)."""
    from hydra.errors import InstantiationException

    from digitlab.config.signatures import argument_names
    from digitlab.config.targets import build

    try:
        takes = argument_names(str(model.get("_target_", "")))
        width = {"num_classes": num_classes} if takes is None or "num_classes" in takes else {}
        return build(
            {**model, **width},
            "network",
            trusted,
            untrusted=True,
            path="model.",
            origin=str(source),
        )
    except (InstantiationException, TypeError, ValueError) as e:
        first = str(e.__cause__ or e).strip().splitlines() or [type(e).__name__]
        raise DigitlabError(
            f"{source}: its model config does not build a network ({first[0][:200]}): the "
            "checkpoint is damaged or was edited; retrain, or use another checkpoint"
        ) from None


def network_from_checkpoint(
    path: str | Path, trusted: Iterable[str] = ()
) -> tuple[Any, dict[str, Any]]:
    """The network of a digitlab checkpoint, its weights loaded strictly, in eval mode, and the
    run config it was built from.

    Args:
        path: a ``.ckpt`` written by digitlab training.
        trusted: module names allowed beyond the project's (the user's own, never the
            checkpoint's).
    """
    checkpoint = load_checkpoint(path)
    config = checkpoint_config(checkpoint)
    if config is None or not isinstance(config.get("model"), Mapping):
        raise DigitlabError(
            f"{path} holds no digitlab run config (hyper_parameters.config): "
            "pass a checkpoint written by digitlab training"
        )
    classes = run_classes(config)
    net = build_network(config["model"], trusted, f"checkpoint {path}", len(classes))
    load_net_weights(net, checkpoint["state_dict"], path)
    return net.eval(), config


@dataclass
class Resume:
    """Where training continues from: a checkpoint and its MLflow run (if it is in this store).

    Only the state in the file is taken (weights, optimizer, loops, scores), never its paths:
    :func:`restore_point` rewrites them into the run's own folder."""

    path: Path
    run_id: str | None
    checkpoint: dict[str, Any]


# ModelCheckpoint's state names files it wrote: it deletes them when they drop out of its
# top k, overwrites the last one, and ``ckpt_path="best"`` reads the best one. From a file
# made elsewhere, every one of those is a place this run must not touch.
_PATH_STATE = {
    "best_model_path": "",
    "kth_best_model_path": "",
    "last_model_path": "",
    "best_k_models": {},
    "best_model_score": None,
    "kth_value": None,
}


def restore_point(resume: Resume, folder: Path, scratch: Path) -> Path:
    """The checkpoint Lightning restores from: ``resume``'s state with every ModelCheckpoint
    path rewritten into ``folder`` (the run's own checkpoint folder), written into ``scratch``.

    The best-so-far score carries over only with its file: the best checkpoint the resumed one
    names is copied into ``folder`` when it is a readable checkpoint of the same run; otherwise
    the best is counted afresh from the next validation.
    """
    import os
    import shutil

    import torch

    folder = Path(os.path.realpath(folder))  # as ModelCheckpoint holds its dirpath
    folder.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    checkpoint = dict(resume.checkpoint)
    callbacks = {}
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(state, Mapping):
            state = {**state, **_PATH_STATE, "dirpath": str(folder)}
            best = _same_run_best(resume, resume.checkpoint["callbacks"][key])
            if state.get("monitor") and best is not None:
                kept = folder / "best.ckpt"
                shutil.copyfile(best[0], kept)
                state.update(
                    best_model_path=str(kept),
                    kth_best_model_path=str(kept),
                    best_k_models={str(kept): best[1]},
                    best_model_score=best[1],
                    kth_value=best[1],
                )
        callbacks[key] = state
    checkpoint["callbacks"] = callbacks
    path = scratch / "restore.ckpt"
    torch.save(checkpoint, path)
    return path


def _same_run_best(resume: Resume, state: Mapping[str, Any]) -> tuple[Path, Any] | None:
    """(path, score) of the best checkpoint ``state`` names, if it is a ``best.ckpt`` that loads
    weights-only and was written by the same run as the resumed checkpoint; else None."""
    run_id, score = resume.checkpoint.get(RUN_ID_KEY), state.get("best_model_score")
    path = Path(str(state.get("best_model_path") or ""))
    if not run_id or score is None or path.name != "best.ckpt" or not path.is_file():
        return None
    try:
        best = load_checkpoint(path)
    except DigitlabError:
        return None
    return (path, score) if best.get(RUN_ID_KEY) == run_id else None


def find_resume(target: str, client, download_dir: Path) -> Resume:
    """Resolve ``resume=<target>``: a ``.ckpt`` path, or an MLflow run id in ``client``'s store.

    A run id resumes from the run's ``last.ckpt``: the local file when it is still there, else
    the copy logged as the run's artifact (downloaded into ``download_dir``).
    """
    from mlflow.exceptions import MlflowException

    path = Path(str(target)).expanduser()
    if path.is_file() or path.suffix == ".ckpt":
        checkpoint = load_checkpoint(path)
        run_id = checkpoint.get(RUN_ID_KEY)
        if run_id:
            try:
                client.get_run(run_id)
            except MlflowException:  # written by a run of another store: start a new run here
                run_id = None
        return Resume(path, run_id, checkpoint)
    try:
        run = client.get_run(str(target))
    except MlflowException:
        raise DigitlabError(
            f"resume={target} is neither a checkpoint file nor a run in {client.tracking_uri}: "
            "give a .ckpt path or a run id shown by the MLflow UI"
        ) from None
    local = Path(run.data.tags.get(CHECKPOINT_DIR_TAG, "/nonexistent")) / "last.ckpt"
    if not local.is_file():
        try:
            local = Path(
                client.download_artifacts(
                    run.info.run_id, "checkpoints/last.ckpt", str(download_dir)
                )
            )
        except (MlflowException, OSError):
            raise DigitlabError(
                f"run {target} has no last.ckpt to resume from (it stopped before its first "
                "epoch ended): start it again without resume="
            ) from None
    return Resume(local, run.info.run_id, load_checkpoint(local))

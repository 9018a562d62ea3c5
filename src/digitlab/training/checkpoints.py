"""From a checkpoint to a network, safely: weights-only unpickling, an allow-list for the code its
config names, strict weights, and one-line errors for bad files. Predict, resume and the tests
all come through here."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from digitlab.config import project_root
from digitlab.config.signatures import argument_names
from digitlab.config.spec import NetworkSpec, read_run
from digitlab.config.targets import Refused, resolve
from digitlab.errors import DigitlabError
from digitlab.tracking.tags import RUN_ID_KEY

# A checkpoint larger than this is refused before it is read: a digit network and its
# optimizer state are a few MB (LeNet with Adam: 5 MB), and the bound keeps a crafted file's
# tensors from taking the machine's memory.
MAX_CHECKPOINT_BYTES = 256 * 1024 * 1024
# Weights a network built from a stored recipe may have (counted on the meta device, before any
# memory is taken): 20 M is 80 MB of float32, fifty times LeNet-5's widest preset.
MAX_PARAMETERS = 20_000_000


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at ``path``, read on the CPU with ``torch.load(weights_only=True)``:
    never unpickles code. Raises DigitlabError, in one line, for a missing, corrupt, truncated,
    foreign or oversized file; the size (inflated too: ``torch.save`` stores its members
    uncompressed, so a compressed member is a crafted file) is checked before anything is read.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DigitlabError(f"checkpoint {path} does not exist: give the path of a .ckpt file")

    def unreadable(why: str) -> DigitlabError:
        return DigitlabError(
            f"{path} is not a readable checkpoint: it is corrupt or truncated ({why}); use another "
            ".ckpt file, e.g. a run's checkpoints/last.ckpt"
        )

    refused = "refused, nothing was read; use a .ckpt file written by digitlab training"
    if (size := path.stat().st_size) > MAX_CHECKPOINT_BYTES:
        raise DigitlabError(
            f"{path} is {size // 2**20} MB, more than a digitlab checkpoint's "
            f"{MAX_CHECKPOINT_BYTES // 2**20} MB: {refused}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise unreadable("not torch's zip format") from None
    inflated = sum(m.file_size for m in members)
    if inflated > MAX_CHECKPOINT_BYTES or any(
        m.compress_type != zipfile.ZIP_STORED for m in members
    ):
        raise DigitlabError(
            f"{path} holds compressed or oversized members ({inflated // 2**20} MB inflated), "
            f"which torch.save never writes: {refused}"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for bad bytes: zip, pickle, EOF, storage
        if "Unsupported global" in str(e):  # a pickled class or function, not corrupt bytes
            raise DigitlabError(
                f"{path} holds Python objects, not only tensors and plain values; refused for "
                "safety (checkpoints load with weights_only=True): use a checkpoint digitlab wrote"
            ) from None
        raise unreadable(type(e).__name__) from None
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise DigitlabError(
            f"{path} is not a Lightning checkpoint (it has no state_dict): use a .ckpt file "
            "written by digitlab training"
        )
    return dict(checkpoint)


def net_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The network's own weights: a LightningModule state_dict's ``net.*`` entries, unprefixed."""
    net = {k[4:]: v for k, v in state_dict.items() if isinstance(k, str) and k.startswith("net.")}
    return net or dict(state_dict)


def load_net_weights(
    net, state_dict: Mapping[str, Any], source: str | Path = "the checkpoint"
) -> None:
    """Load ``state_dict`` (a module's or a network's) into ``net``, strictly. Raises
    DigitlabError naming the first mismatch (instead of PyTorch's multi-line report) when it
    holds something other than named tensors or weights of another architecture."""
    weights = net_state_dict(state_dict)
    for key, value in weights.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise DigitlabError(
                f"{source} holds {type(value).__name__} under the weight name {str(key)[:60]!r}, "
                "where a checkpoint holds tensors named by layer: refused; use a .ckpt file "
                "written by digitlab training"
            )
    own = net.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [k for k in own if k in weights and weights[k].shape != own[k].shape]
    if shapes:
        k = shapes[0]
        detail = f"{k} is {list(weights[k].shape)} there but {list(own[k].shape)} here"
    elif missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        detail = f"it lacks {missing[0]}{more}"
    elif unexpected:
        detail = f"it has extra {unexpected[0][:60]}"
    else:
        net.load_state_dict(weights)
        return
    raise DigitlabError(
        f"{source} holds weights of another architecture than the {type(net).__name__} "
        f"configured ({detail}): use the model config it was trained with (the run's "
        "config.yaml) or another checkpoint"
    )


def stored_recipe(checkpoint: Mapping[str, Any]) -> Any:
    """The run config saved in a digitlab checkpoint (``hyper_parameters.config``), as stored:
    read it with :func:`digitlab.config.spec.read_run`, never directly."""
    hparams = checkpoint.get("hyper_parameters")
    return hparams.get("config") if isinstance(hparams, Mapping) else None


def build_network(
    model: NetworkSpec, trusted: Iterable[str] = (), source: Any = "config", num_classes: int = 10
):
    """The network ``model`` (a parsed recipe) describes, with ``num_classes`` outputs: its one
    name looked up among digitlab's networks (or a class defined in a ``trusted`` package of
    this command) and called with its plain arguments, first on the meta device, so that a
    recipe asking for more than MAX_PARAMETERS weights is refused before memory is taken."""
    try:
        network = resolve(model.target, ("network",), trusted)
    except Refused as e:
        raise DigitlabError(
            f"{source} names model.{e.key}, which is not trusted code (it {e.reason}): refused, "
            "nothing was run. If you wrote that module, trust it: --trust MODULE "
            "(digitlab-predict, digitlab-serve), trust=[MODULE] (digitlab.load) or "
            "trusted_targets=[MODULE]"
        ) from None
    arguments = model.node()
    arguments.pop("_target_")
    # as training built it (digitlab.training.build.class_count)
    if (takes := argument_names(model.target)) is None or "num_classes" in takes:
        arguments["num_classes"] = num_classes
    try:
        with torch.device("meta"):
            weights = sum(p.numel() for p in network(**arguments).parameters())
        if weights > MAX_PARAMETERS:
            raise DigitlabError(
                f"{source}: its model config asks for {weights:,} weights, more than "
                f"{MAX_PARAMETERS:,}: refused, nothing was built; use another checkpoint"
            )
        return network(**arguments)
    except DigitlabError:
        raise
    except Exception as e:  # a network's own checks: TypeError, ValueError, RuntimeError...
        first = str(e).strip().splitlines() or [type(e).__name__]
        raise DigitlabError(
            f"{source}: its model config does not build a network ({first[0][:200]}): the "
            "checkpoint is damaged or was edited; retrain, or use another checkpoint"
        ) from None


def network_from_checkpoint(
    path: str | Path, trusted: Iterable[str] = ()
) -> tuple[Any, dict[str, Any]]:
    """The network of a digitlab checkpoint (``path``), its weights loaded strictly, in eval
    mode, and the recipe it was built from (:meth:`RunSpec.config`: plain values only).
    ``trusted``: module names allowed beyond the project's (the user's, never the checkpoint's).
    """
    checkpoint = load_checkpoint(path)
    spec = read_run(stored_recipe(checkpoint), f"checkpoint {path}")
    net = build_network(spec.model, trusted, f"checkpoint {path}", len(spec.classes))
    load_net_weights(net, checkpoint["state_dict"], path)
    return net.eval(), spec.config()


@dataclass
class Resume:
    """Where training continues from: a checkpoint and its MLflow run (if it is in this store).

    Only the state in the file is taken, never its paths (:func:`restore_point`). ``folder``:
    the checkpoint folder this command itself found ``path`` in (the path the user gave, the job
    folder it searched out, the folder it downloaded the run's artifacts into), where the same
    run's ``best.ckpt`` may be; None: none."""

    path: Path
    run_id: str | None
    checkpoint: dict[str, Any]
    folder: Path | None = None


def restore_point(resume: Resume, folder: Path, scratch: Path) -> Path:
    """The checkpoint Lightning restores from: ``resume``'s state with every ModelCheckpoint
    path rewritten into ``folder`` (the run's own checkpoint folder), written into ``scratch``.

    ModelCheckpoint's state names files it deletes (its top k), overwrites (the last) and reads
    (``ckpt_path="best"``), and Lightning keeps ``best_model_path`` even from another folder:
    from a file made elsewhere every one of those is a place this run must not touch. The
    best-so-far score carries over only with the same run's ``best.ckpt`` beside the resumed
    checkpoint or already in ``folder`` (:func:`_same_run_best`), copied into ``folder``; else
    the best is counted afresh from the next validation.
    """
    folder = Path(os.path.realpath(folder))  # as ModelCheckpoint holds its dirpath
    folder.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    checkpoint, kept = dict(resume.checkpoint), folder / "best.ckpt"
    callbacks = dict(checkpoint.get("callbacks") or {})
    for key, state in callbacks.items():
        if not (str(key).startswith("ModelCheckpoint") and isinstance(state, Mapping)):
            continue
        score = state.get("best_model_score")
        best = state.get("monitor") and score is not None and _same_run_best(resume, folder)
        if best and best.resolve() != kept:
            shutil.copyfile(best, kept)
        path, k_best = (str(kept), {str(kept): score}) if best else ("", {})
        callbacks[key] = {
            **state,
            "dirpath": str(folder),
            "last_model_path": "",
            "best_model_path": path,
            "kth_best_model_path": path,
            "best_k_models": k_best,
            "best_model_score": score if best else None,
            "kth_value": score if best else None,
        }
    checkpoint["callbacks"] = callbacks
    torch.save(checkpoint, scratch / "restore.ckpt")
    return scratch / "restore.ckpt"


def _same_run_best(resume: Resume, folder: Path) -> Path | None:
    """The ``best.ckpt`` of the resumed checkpoint's own folder, else of the run's new
    ``folder``, that loads weights-only and was written by the same run; else None."""
    paths = (Path(c) / "best.ckpt" for c in (resume.folder, folder) if c)
    found = _first_stamped(paths, resume.checkpoint.get(RUN_ID_KEY))
    return found[0] if found else None


def _first_stamped(paths: Iterable[Path], run_id: str | None) -> tuple[Path, dict] | None:
    """The first of ``paths`` that loads weights-only and is stamped with ``run_id``, read."""
    for path in paths if run_id else ():
        try:
            checkpoint = load_checkpoint(path)
        except DigitlabError:  # missing, unreadable or foreign: not this run's
            continue
        if checkpoint.get(RUN_ID_KEY) == run_id:
            return path, checkpoint
    return None


# Hydra's job folders: <root>/<date>/<time>/ for a run, <root>/<date>/<time>/<job>/ in a
# multirun, a fold's one level below. A ``checkpoints`` folder deeper than this is not a job's.
_JOB_DEPTH = 5


def job_roots(output_dir: str | Path | None = None) -> list[Path]:
    """Where ``resume=<run id>`` looks for the run's job folder: the project's ``outputs/`` and
    ``multirun/`` (Hydra's folders), and the folder holding this job's own ``output_dir`` (its
    sibling jobs), when the command names one."""
    roots = [project_root() / "outputs", project_root() / "multirun"]
    return roots + ([Path(output_dir).absolute().parent] if output_dir is not None else [])


def _job_checkpoints(roots: Iterable[Path]) -> list[Path]:
    """Every ``<job folder>/checkpoints/last.ckpt`` (a regular file, not a link) under
    ``roots``, newest first; links to folders are not followed, hidden folders not entered, and
    MLflow's copies (``<run>/artifacts/checkpoints/``, in a store kept beside the jobs) are not a
    job's: the run's logged copy is the fallback, downloaded with its ``best.ckpt``."""
    found: dict[Path, int] = {}
    for root in roots:
        depth = len(Path(root).parts)
        for top, folders, files in os.walk(root):
            here = Path(top)
            below = len(here.parts) - depth
            folders[:] = [f for f in folders if not f.startswith(".") and below < _JOB_DEPTH]
            if here.name != "checkpoints" or here.parent.name == "artifacts":
                continue
            with contextlib.suppress(OSError):
                info = os.lstat(here / "last.ckpt") if "last.ckpt" in files else None
                if info and stat.S_ISREG(info.st_mode):
                    found[here / "last.ckpt"] = info.st_mtime_ns
    return sorted(found, key=found.__getitem__, reverse=True)


def _names_run(path: Path, run_id: str) -> bool:
    """Whether the checkpoint at ``path`` may be stamped with ``run_id``: its pickle (the small
    part of torch's zip file; the tensors are not read) holds the id's text."""
    try:
        with zipfile.ZipFile(path) as archive:
            (pickle,) = [i for i in archive.infolist() if i.filename.endswith("data.pkl")]
            return pickle.file_size <= 64 * 2**20 and run_id.encode() in archive.read(pickle)
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


def find_resume(
    target: str, client, download_dir: Path, roots: Iterable[Path] | None = None
) -> Resume:
    """Resolve ``resume=<target>``: a ``.ckpt`` path, or an MLflow run id in ``client``'s store.

    A run id resumes from the run's ``last.ckpt``: the newest one stamped with its id in a job
    folder under ``roots`` (default :func:`job_roots`), else the copy logged as the run's
    artifact (downloaded into ``download_dir``, with its ``best.ckpt`` if logged). No path the
    store holds (a tag, a checkpoint's state) is read. Raises DigitlabError in one line when the
    run has no ``last.ckpt`` in either.
    """
    # lazy: MLflow costs 1.5 s, paid by resume= alone, not by the commands that read a
    # checkpoint file (digitlab-predict, digitlab.load).
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
        return Resume(path, run_id, checkpoint, path.parent)
    try:
        run_id = client.get_run(str(target)).info.run_id
    except MlflowException:
        raise DigitlabError(
            f"resume={target} is neither a checkpoint file nor a run in {client.tracking_uri}: "
            "give a .ckpt path or a run id shown by the MLflow UI"
        ) from None
    roots = list(job_roots() if roots is None else roots)
    jobs = (p for p in _job_checkpoints(roots) if _names_run(p, run_id))
    if found := _first_stamped(jobs, run_id):
        return Resume(found[0], run_id, found[1], found[0].parent)
    try:
        local = Path(client.download_artifacts(run_id, "checkpoints/last.ckpt", str(download_dir)))
    except (MlflowException, OSError):
        searched = ", ".join(str(r) for r in roots)
        raise DigitlabError(
            f"run {target} has no last.ckpt to resume from: none logged to the run, and no job "
            f"folder under {searched} holds one (it stopped before its first epoch ended): start "
            "it again without resume=, or give its checkpoint, resume=<job folder>/checkpoints/"
            "last.ckpt"
        ) from None
    # the best checkpoint beside it, for the best-so-far score (restore_point)
    with contextlib.suppress(MlflowException, OSError):
        client.download_artifacts(run_id, "checkpoints/best.ckpt", str(download_dir))
    return Resume(local, run_id, load_checkpoint(local), local.parent)

"""What a run is, as data: the one schema of a run's recipe (network, data set, optimizer,
scheduler, the trainer's numbers, seed), checked as plain dicts with pydantic.

Pydantic, not Hydra structured configs: the same models check a command's composed config before
anything is imported (:func:`check_config`, :class:`ConfigSpec`) and the state read back from a
checkpoint, an MLflow model or a store (:func:`read_run`, :class:`RunSpec`), which is never
resolved or instantiated, so it must not go through OmegaConf. Every value is plain and every
size bounded before anything is allocated. No torch here: the command line checks configs first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_serializer,
    model_validator,
)

from digitlab.config import suggest
from digitlab.config.classes import MAX_CLASSES, class_names
from digitlab.config.signatures import argument_names
from digitlab.config.targets import NAME, check_targets, trusted_targets
from digitlab.errors import DigitlabError

# An argument name of a network, optimizer, scheduler, augmentation or data source.
ARGUMENT = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
# numpy's and torch's generators take unsigned 32-bit seeds; outside, seeding raises mid-start.
SEED_MAX = 2**32 - 1
# Bounds on what a recipe may ask for, checked before anything is allocated: digit networks
# are far below each (LeNet: 2 conv blocks, 431 080 weights), and a stored recipe asking for
# more is refused rather than built.
MAX_WIDTH = 65_536  # units in a layer, filters in a conv block
MAX_LAYERS = 64  # entries of a list (layer widths, betas, milestones)
MAX_ARGUMENTS = 32  # arguments of one built object
MAX_TEXT = 256  # characters of a string value
MAX_BATCH = 1_000_000
MAX_STEPS_PER_CALL = 10_000
MAX_EPOCHS = 100_000
MAX_INTEGER = 2**53  # beyond this a JSON/YAML number stops being exact


def number(value: Any) -> bool:
    """A finite number (an inf or NaN trains a run that fails at its first step)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_seed(value: Any) -> bool:
    return whole(value) and 0 <= value <= SEED_MAX


def holdout(value: Any) -> bool:
    return (whole(value) and 1 <= value <= MAX_INTEGER) or (
        isinstance(value, float) and 0 < value < 1
    )


def check(test: Callable[[Any], bool], wanted: str) -> BeforeValidator:
    """A field's rule (``Annotated[Any, check(...)]``): any value that passes ``test``, else
    "it must be <wanted>" (an inf or NaN: "it must be a finite number")."""

    def rule(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("it must be a finite number")
        if not test(value):
            raise ValueError(f"it must be {wanted}")
        return value

    return BeforeValidator(rule)


def plain(value: Any, entry: bool = False) -> Any:
    """``value`` if it is a plain value a recipe may hold: a bounded number, a boolean, a short
    string without ``${`` (nothing read back is resolved), null, or a short list of those."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_INTEGER:
            raise ValueError(f"it must be a number of at most {MAX_INTEGER} in size")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("it must be a finite number")
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise ValueError(f"it must be a text of at most {MAX_TEXT} characters")
        if "${" in value:
            raise ValueError("it must be a plain value, not an interpolation (${...})")
        return value
    if isinstance(value, list | tuple) and not entry:
        if len(value) > MAX_LAYERS:
            raise ValueError(f"it must be a list of at most {MAX_LAYERS} values")
        return ENTRIES.validate_python(list(value))  # its errors name the entry (betas.1)
    raise ValueError(
        "it must be a plain value (a number, true/false, a text, or a list of those), not "
        f"{'a nested list' if isinstance(value, list | tuple) else _kind(value)}"
    )


ENTRIES = TypeAdapter(list[Annotated[Any, BeforeValidator(lambda v: plain(v, entry=True))]])
Plain = Annotated[Any, BeforeValidator(plain)]


def _kind(value: Any) -> str:
    return (
        "a mapping (nested code or config)" if isinstance(value, Mapping) else type(value).__name__
    )


def _classes(value: Any) -> Any:
    try:
        class_names(value)
    except DigitlabError as e:  # its message names the key; the reason follows it
        text = str(e)
        if " is invalid: " in text:
            raise ValueError(
                f"it must be the number of classes (2 to {MAX_CLASSES}) or the name of each "
                'class by label, e.g. 10 or ["0", "1", ..., "9"]'
            ) from None
        raise ValueError("it " + text.split(" ", 1)[1]) from None
    return list(value) if isinstance(value, list | tuple) else value


def _arguments(data: Any, declared: set[str], what: str, most: int = MAX_ARGUMENTS) -> Any:
    """The checks of a node of keyword arguments that its values' type cannot make."""
    if not isinstance(data, Mapping):
        raise ValueError(f"it must be a mapping {what}, not {_kind(data)}")
    extra = [k for k in data if k not in declared]
    if len(extra) > most:
        raise ValueError(f"it must have at most {most} arguments")
    for key in extra:
        if not isinstance(key, str) or not ARGUMENT.fullmatch(key):
            raise ValueError(f"its key {str(key)[:40]!r} is not an argument name")
    return data


class Component(BaseModel):
    """Something a recipe builds by name: ``_target_``, whether it is a factory
    (``_partial_``), and its arguments, each a plain value."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)
    __pydantic_extra__: dict[str, Plain] = Field(init=False)

    target: Annotated[
        Any,
        check(
            lambda v: isinstance(v, str) and bool(NAME.fullmatch(v)),
            "a dotted name of public code, e.g. digitlab.models.LeNet",
        ),
    ] = Field(alias="_target_")
    partial: Annotated[Any, check(lambda v: isinstance(v, bool), "true or false")] = Field(
        default=False, alias="_partial_"
    )

    @model_validator(mode="before")
    @classmethod
    def _plain_arguments(cls, data: Any) -> Any:
        declared = {f.alias or name for name, f in cls.model_fields.items()}
        return _arguments(data, declared, "with a _target_")

    def arguments(self) -> dict[str, Any]:
        """The plain keyword arguments (``_target_`` and ``_partial_`` left out)."""
        return dict(self.model_extra or {})

    @model_serializer
    def node(self) -> dict[str, Any]:
        """The config node: ``_target_``, ``_partial_`` when set, the arguments given."""
        given = {k: getattr(self, k) for k in type(self).model_fields if k in self.model_fields_set}
        given.pop("target", None)
        return {
            "_target_": self.target,
            **({"_partial_": True} if given.pop("partial", False) else {}),
            **given,
            **self.arguments(),
        }


def count(low: int, high: int = MAX_INTEGER, example: str = "") -> BeforeValidator:
    """A field's rule: an integer from ``low`` to ``high``."""
    return check(lambda v: whole(v) and low <= v <= high, f"an integer >= {low}{example}")


def layers(what: str, example: str) -> BeforeValidator:
    """A field's rule: layer widths (a 0-wide layer builds, and trains nothing)."""
    return check(
        lambda v: (
            isinstance(v, list | tuple)
            and len(v) <= MAX_LAYERS
            and all(whole(w) and 1 <= w <= MAX_WIDTH for w in v)
        ),
        f"a list of integers from 1 to {MAX_WIDTH} ({what}), e.g. {example}",
    )


# digitlab's networks' arguments, by class: kept here, not read with inspect.signature, which
# imports torch (about 7 s on a busy 2-core machine) before a config could be checked.
class MLPArguments(BaseModel):
    hidden: Annotated[Any, layers("units per hidden layer", "[500]")] = None
    activation: Annotated[Any, check(lambda v: isinstance(v, str), "a name, e.g. relu")] = None


class LeNetArguments(MLPArguments):
    channels: Annotated[Any, layers("filters per conv block", "[20, 50]")] = None
    kernel_size: Annotated[Any, count(1, 31, ", e.g. 5")] = None


class ConvNetArguments(MLPArguments):
    channels: Annotated[Any, layers("filters per conv block", "[16, 32]")] = None
    convs_per_block: Annotated[Any, count(1, MAX_LAYERS, ", e.g. 2")] = None
    dropout: Annotated[Any, check(lambda v: number(v) and 0 <= v < 1, "a number in [0, 1)")] = None


NETWORKS: dict[str, type[BaseModel]] = {
    "LeNet": LeNetArguments,
    "MLP": MLPArguments,
    "ConvNet": ConvNetArguments,
}


def network_schema(target: str) -> type[BaseModel] | None:
    """The argument schema of digitlab's network ``target`` names (``digitlab.models.LeNet`` or
    ``digitlab.models.lenet.LeNet``), or None: another network means its own things by them."""
    module, _, name = str(target).rpartition(".")
    return NETWORKS.get(name) if module.startswith("digitlab.models") else None


def arguments(target: str) -> tuple[str, ...] | None:
    """The keyword arguments ``target`` takes: a digitlab network's schema, else what its source
    declares (:mod:`digitlab.config.signatures`); None where neither tells."""
    schema = network_schema(target)
    if schema is not None:
        return (*schema.model_fields, "input_size", "num_classes")
    return argument_names(target)


def no_argument(target: str, name: str, names: Sequence[str], where: str = "model.") -> str:
    """``<target> takes no argument <name>: did you mean <where><closest>? (...)``."""
    return f"{target} takes no argument {name}: " + suggest(
        name, list(names), f"{target}'s arguments", prefix=where
    )


def unknown_argument(network: Component, names: Sequence[str] | None) -> str | None:
    """``model.<key>: <target> takes no argument <key>: did you mean ...`` for the first
    argument ``network`` gives that is not in ``names``; None when all are (or ``names`` is)."""
    for key in network.arguments():
        if names is not None and key not in names:
            return f"model.{key}: {no_argument(network.target, key, names)}"
    return None


class NetworkSpec(Component):
    """The network: a name (digitlab's networks, or a class of a package the command trusts)
    and plain arguments; ``num_classes`` comes from the data set, never from here."""

    input_size: Annotated[
        Any, check(lambda v: whole(v) and 8 <= v <= 256, "an image side in pixels, e.g. 28 or 32")
    ] = 28
    partial: Annotated[
        Any, check(lambda v: v is False, "absent: a network is built, not a factory")
    ] = Field(default=False, alias="_partial_")
    num_classes: Annotated[
        Any,
        check(
            lambda v: False,
            "absent: the data set's classes give the network's width (set data.classes)",
        ),
    ] = None

    @model_validator(mode="after")
    def _digitlab_network(self) -> NetworkSpec:
        """Its arguments' values; pydantic names them under ``model.`` (names: check_config)."""
        if schema := network_schema(self.target):
            schema.model_validate(self.arguments())
        return self


# A file name inside the data root: no folder, no way up.
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MD5 = re.compile(r"[0-9a-f]{32}")


def _file_table(value: Any) -> Any:
    """``{split: [file name, md5 or null]}`` of an IDX data set, at most 8 entries."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or len(value) > 8:
        raise ValueError("it must be a table of at most 8 entries {split: [file name, md5]}")
    for split, entry in value.items():
        ok = (
            isinstance(split, str)
            and ARGUMENT.fullmatch(split)
            and isinstance(entry, list | tuple)
            and len(entry) == 2
            and isinstance(entry[0], str)
            and FILE_NAME.fullmatch(entry[0])  # no "/", and it cannot start with "."
            and (entry[1] is None or (isinstance(entry[1], str) and MD5.fullmatch(entry[1])))
        )
        if not ok:
            raise ValueError(
                f"its entry {str(split)[:40]!r} must be [file name, md5 or null], a file name "
                "without folders"
            )
    return {k: list(v) for k, v in value.items()}


class SourceSpec(Component):
    """A data source: a ``digitlab.data.sources`` reader and its plain arguments (which files,
    how they are laid out). Where the files are (``root``), and whether and from where missing
    ones are downloaded, are never part of it: the command decides those."""

    files: Annotated[Any, BeforeValidator(_file_table)] = None

    @model_validator(mode="before")
    @classmethod
    def _no_places(cls, data: Any) -> Any:
        if isinstance(data, Mapping):  # where to read and fetch from: the command's to say
            places = ("root", "download", "mirrors", "archive", "archive_md5")
            data = {k: v for k, v in data.items() if k not in places}
        return data


class AugmentSpec(Component):
    """A training-time augmentation and its plain arguments."""


class OptimizerSpec(Component):
    lr: Annotated[Any, check(lambda v: number(v) and v > 0, "a number > 0, e.g. 0.1")] = None
    momentum: Annotated[Any, check(lambda v: number(v) and 0 <= v < 1, "a number in [0, 1)")] = None
    weight_decay: Annotated[Any, check(lambda v: number(v) and v >= 0, "a number >= 0")] = None


class SchedulerSpec(Component):
    interval: Annotated[Any, check(lambda v: v in ("epoch", "step"), "epoch or step")] = "epoch"


class DataSpec(BaseModel):
    """The data set's recipe: its reader, classes, split, batches and normalisation."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    target: Annotated[
        Any,
        check(
            lambda v: v == "digitlab.data.datamodule.DigitDataModule",
            "digitlab.data.datamodule.DigitDataModule",
        ),
    ] = Field(default="digitlab.data.datamodule.DigitDataModule", alias="_target_")
    # The command's own: where its files are. Never read back (read_run drops it).
    root: Annotated[Any, check(lambda v: v is None or isinstance(v, str), "a folder")] = Field(
        default=None, exclude=True
    )
    source: SourceSpec | None = None
    predict: SourceSpec | None = None
    classes: Annotated[Any, BeforeValidator(_classes)] = 10
    val_size: Annotated[
        Any,
        check(
            lambda v: holdout(v) or (whole(v) and v == 0),
            "a fraction in (0, 1), a count >= 1, or 0 (a final fit: no holdout)",
        ),
    ] = 5000
    test_size: Annotated[
        Any, check(lambda v: v is None or holdout(v), "null, a fraction in (0, 1) or a count >= 1")
    ] = None
    split_seed: Annotated[
        Any, check(lambda v: v is None or is_seed(v), f"null or an integer from 0 to {SEED_MAX}")
    ] = None
    folds: Annotated[
        Any,
        check(
            lambda v: v is None or (whole(v) and 2 <= v <= 1000),
            "null (one validation holdout) or an integer >= 2 (K-fold cross-validation)",
        ),
    ] = None
    fold: Annotated[Any, count(0, 999)] = 0
    batch_size: Annotated[Any, count(1, MAX_BATCH)] = 100
    eval_batch_size: Annotated[Any, count(1, MAX_BATCH)] = 1000
    steps_per_call: Annotated[Any, count(1, MAX_STEPS_PER_CALL)] = 1
    scale: Annotated[Any, check(lambda v: number(v) and v > 0, "a number > 0")]
    mean: Annotated[Any, check(number, "a number")]
    std: Annotated[Any, check(lambda v: number(v) and v > 0, "a number > 0")]
    augment: AugmentSpec | None = None


class TrainerSpec(BaseModel):
    """The trainer's numbers that decide what is trained (how long, at what precision, clipped
    how); the rest are Lightning's keyword arguments as plain values."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, Plain] = Field(init=False)

    max_epochs: Annotated[Any, count(1, MAX_EPOCHS)] = 3
    gradient_clip_val: Annotated[
        Any, check(lambda v: v is None or (number(v) and v >= 0), "null or a number >= 0")
    ] = None

    @model_validator(mode="before")
    @classmethod
    def _plain_arguments(cls, data: Any) -> Any:
        return _arguments(data, set(), "of the Trainer's arguments", MAX_ARGUMENTS * 2)


class RunSpec(BaseModel):
    """A run's recipe: what it trains, as plain data."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: NetworkSpec
    data: DataSpec
    optimizer: OptimizerSpec | None = None
    scheduler: SchedulerSpec | None = None
    trainer: TrainerSpec = Field(default_factory=TrainerSpec)
    seed: Annotated[
        Any, check(is_seed, f"an integer from 0 to {SEED_MAX} (numpy's and torch's seed range)")
    ] = 42
    test_after_fit: Annotated[Any, check(lambda v: isinstance(v, bool), "true or false")] = True
    channels_last: Annotated[Any, check(lambda v: isinstance(v, bool), "true or false")] = False
    cuda_graphs: Annotated[Any, check(lambda v: isinstance(v, bool), "true or false")] = False

    @property
    def classes(self) -> tuple[str, ...]:
        return class_names(self.data.classes)

    def config(self) -> dict[str, Any]:
        """The recipe as a run config's plain dict (what prediction, serving and ``resume=``
        read): built nodes as ``_target_`` plus arguments, every value plain."""
        return self.model_dump(by_alias=True)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _described(error: ValidationError) -> str:
    """The first problem pydantic found: ``<key>=<value> is invalid: it must be ...``, or
    ``<key> <what is wrong>``."""
    first = error.errors(include_url=False)[0]
    key, value, kind = ".".join(str(p) for p in first["loc"]), first.get("input"), first["type"]
    reason = str(first["msg"]).removeprefix("Value error, ")
    if kind == "missing":
        return f"{key} is missing"
    if kind == "extra_forbidden":
        return f"{key} is not a key digitlab knows there"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        reason = f"it must be a mapping, not {_kind(value)}"
    if reason.startswith("it "):
        return f"{key}={_shown(value)} is invalid: {reason}"
    return f"{key} {reason}"


def read_run(stored: Any, origin: str) -> RunSpec:
    """Parse a run's stored config (a checkpoint's, an MLflow model's, a store's ``config.yaml``,
    what ``resume=`` continues) into a :class:`RunSpec`: the recipe's keys only (where and how
    a command runs is that command's to say), nothing resolved or built. Raises DigitlabError,
    one line naming ``origin`` (e.g. ``checkpoint best.ckpt``), the key and what it must be."""
    if not isinstance(stored, Mapping):
        raise DigitlabError(
            f"{origin}: its run config is {_kind(stored)}, not a mapping: refused, nothing was "
            "run; use a checkpoint or run digitlab wrote"
        )
    stored = dict(stored)
    data = stored.get("data")
    if isinstance(data, Mapping):
        stored["data"] = {k: v for k, v in data.items() if k != "root"}  # the command's own
    try:
        spec = RunSpec.model_validate(stored)
    except ValidationError as e:
        raise DigitlabError(f"{origin}: {_described(e)}: refused, nothing was run") from None
    # digitlab's networks by their schema; another network's source is not read for stored state
    schema = network_schema(spec.model.target)
    if schema and (problem := unknown_argument(spec.model, arguments(spec.model.target))):
        raise DigitlabError(f"{origin}: {problem}: refused, nothing was run")
    for key in ("source", "predict"):
        source = getattr(spec.data, key)
        file = source.arguments().get("file") if source is not None else None
        if file is not None and not (isinstance(file, str) and FILE_NAME.fullmatch(file)):
            raise DigitlabError(
                f"{origin}: data.{key}.file={_shown(file)} is a path: a stored run names files "
                "inside the data root only (this command's data.root): refused, nothing was run"
            )
    return spec


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def is_devices(value: Any) -> bool:
    """Lightning's forms: auto, a count >= 1, -1 (every device), a list of device indices, or
    the same as a string ("2", "0,1")."""
    if isinstance(value, str) and value.strip() not in ("", "auto"):
        try:
            value = [int(p) for p in value.split(",") if p.strip()] if "," in value else int(value)
        except ValueError:
            return False
    if isinstance(value, list | tuple):
        return len(value) > 0 and all(whole(v) and v >= 0 for v in value)
    return value == "auto" or (whole(value) and (value >= 1 or value == -1))


class TrainerConfig(TrainerSpec):
    """The trainer as a command runs it: where (devices) as well as what."""

    devices: Annotated[
        Any,
        check(
            is_devices,
            "an integer >= 1, -1 (every device), a list of device indices (e.g. [0, 1]) or auto",
        ),
    ] = 1
    accelerator: Annotated[
        Any, check(lambda v: v in ACCELERATORS, "one of " + ", ".join(ACCELERATORS))
    ] = "auto"


class FiguresSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    filters_every_n_epochs: Annotated[Any, count(0, example=" (0: start and end only)")] = 0
    samples: Annotated[Any, count(1)] = 64
    mistakes: Annotated[Any, count(1)] = 16
    probabilities: Annotated[Any, count(1)] = 6


class ConfigSpec(RunSpec):
    """A command's own config: the run's recipe, and where and how this command runs it (its
    other keys are Hydra's, the logger's and the callbacks', checked where they are used)."""

    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    figures: FiguresSpec | None = None
    oof_tta: Annotated[Any, check(lambda v: isinstance(v, bool), "true or false")] = False
    resume: Annotated[
        Any,
        check(
            lambda v: v is None or (isinstance(v, str) and bool(v.strip())),
            "null, an MLflow run id or a .ckpt path",
        ),
    ] = None


def check_config(cfg: DictConfig) -> ConfigSpec | None:
    """Check a command's composed config against :class:`ConfigSpec` before anything heavy is
    imported: its ``_target_`` names, every value's type and range, and the network's argument
    names (a network of the user's: those its source declares). Raises DigitlabError, one line
    naming the key and the fix; None where an interpolation fails (reported where it is used)."""
    check_targets(cfg, trusted_targets(cfg))
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        return None
    try:
        spec = ConfigSpec.model_validate(config)
    except ValidationError as e:
        raise DigitlabError(_described(e)) from None
    if problem := unknown_argument(spec.model, arguments(spec.model.target)):
        raise DigitlabError(problem)
    accumulate = (spec.trainer.model_extra or {}).get("accumulate_grad_batches", 1)
    if accumulate != 1 and spec.data.steps_per_call != 1:
        # Several optimizer steps per Lightning step (the fused path) step the optimizer
        # themselves: accumulation would change what a step is.
        raise DigitlabError(
            f"trainer.accumulate_grad_batches={accumulate!r} needs one optimizer step per "
            "Lightning step: add data.steps_per_call=1 (or raise data.batch_size instead)"
        )
    assert isinstance(config, dict)  # what a DictConfig converts to
    if final_fit(spec.data.val_size, spec.data.folds):  # every labelled row, no validation
        why = "data.val_size=0 is a final fit on every labelled row, with no validation"
        if spec.data.test_size is not None:
            raise DigitlabError(
                f"{why}: data.test_size={spec.data.test_size} would hold rows out; set "
                "data.test_size=null (score the recipe by cross-validation, data.folds)"
            )
        for name, node in (config.get("callbacks") or {}).items():
            monitor = node.get("monitor") if isinstance(node, Mapping) else None
            if isinstance(monitor, str) and monitor.startswith("val/"):
                raise DigitlabError(
                    f"{why}: callbacks.{name} monitors {monitor}, which it never computes; drop "
                    f"it (~callbacks.{name}) or hold out rows (data.val_size)"
                )
    return spec


def final_fit(val_size: object, folds: object = None) -> bool:
    """Whether ``data.val_size`` asks for a final fit: ``0`` (an int), with no ``data.folds``
    (which ignore ``val_size``): every labelled row trains, none validates."""
    return not folds and whole(val_size) and val_size == 0


def check_run(config: Mapping[str, Any]) -> RunSpec:
    """Check a composed, resolved run config (this command's own) against the schema; raise
    DigitlabError ``<key>=<value> is invalid: it must be ...`` for the first value that cannot
    work."""
    try:
        return RunSpec.model_validate(dict(config))
    except ValidationError as e:
        raise DigitlabError(_described(e)) from None

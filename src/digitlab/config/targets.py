"""Which code a config may name in ``_target_``, checked on what the name resolves to.

Hydra imports and calls whatever ``_target_`` names, and its ``_locate`` walks attributes: a
name under an allowed package can reach anything that package imported
(``digitlab.models.lenet.torch.load``). So a name is accepted only if it resolves to one of the
callables digitlab builds (:func:`registry`: its networks, data modules, sources and augmentations
and callbacks, each marked :func:`buildable` where it is defined; ``torch.optim``'s optimizers
and schedulers; Lightning's callbacks), or to a class or function *defined* in a module the user
trusts (``trusted_targets=[mypkg]``, ``--trust mypkg``). Nothing is resolved before the name has
passed a text check (a dotted path of public names under an allowed package), so a refused name
never imports anything.

This module sits on the config floor and imports no digitlab package above it: the packages
that define what a config builds register it here (:func:`buildable`), rather than this module
listing them.

:func:`build` is for the command's own composed config. State read back (a checkpoint's or a
model's saved recipe, a run config in a store) never comes here as it is: it is parsed into
the run schema first (:func:`digitlab.config.spec.read_run`), which keeps plain values only,
and its one network name is looked up with :func:`resolve`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf

from digitlab.errors import DigitlabError

# The packages whose names a config may use at all; what a name resolves to is checked after.
PROJECT_TARGETS = ("digitlab", "torch.optim", "lightning.pytorch.callbacks")
# Dotted public names only: no "_private" or "__dunder__" step (``__globals__``, ``__builtins__``).
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+")


def is_allowed(target: str, trusted: Iterable[str] = ()) -> bool:
    """Whether the *text* ``target`` is a public dotted name under one of the project's packages
    or a ``trusted`` one, matched on whole module names (``mypkg`` allows ``mypkg.nets.Tiny``,
    not ``mypkg_evil.run``). Necessary, not sufficient: :func:`resolve` decides."""
    if not NAME.fullmatch(str(target)):
        return False
    return _root_of(str(target), (*PROJECT_TARGETS, *trusted)) is not None


def _root_of(name: str, roots: Iterable[str]) -> str | None:
    for root in roots:
        root = str(root).rstrip(".")
        if name == root or name.startswith(root + "."):
            return root
    return None


def trusted_targets(cfg: Any) -> tuple[str, ...]:
    """The config's ``trusted_targets``: module names the user allows beyond the project's."""
    value = cfg.get("trusted_targets") if hasattr(cfg, "get") else None
    if value is None:
        return ()
    names = isinstance(value, ListConfig | list | tuple)
    if names and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise DigitlabError(
        f"trusted_targets={value!r} is invalid: it must be a list of module names, "
        "e.g. trusted_targets=[mypkg]"
    )


def _targets(config: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """``(key path, value)`` of every ``_target_`` in ``config``, at any depth."""
    if isinstance(config, DictConfig | ListConfig):
        config = OmegaConf.to_container(config, resolve=False)
    items: Iterable[tuple[Any, Any]]
    if isinstance(config, Mapping):
        if "_target_" in config:
            yield path, config["_target_"]
        items = config.items()
    elif isinstance(config, list | tuple):
        items = enumerate(config)
    else:
        return
    for key, value in items:
        yield from _targets(value, f"{path}{key}.")


def first_untrusted(config: Any, trusted: Iterable[str] = (), path: str = "") -> str | None:
    """``"<key path>_target_=<target>"`` of the first ``_target_`` whose text is outside the
    allowed packages, else None (the quick check, before anything is imported)."""
    trusted = tuple(trusted)
    for where, target in _targets(config, path):
        if not is_allowed(str(target), trusted):
            return f"{where}_target_={target}"
    return None


def check_targets(config: Any, trusted: Iterable[str] = ()) -> None:
    """Raise DigitlabError if a ``_target_``'s text in ``config`` is outside the allowed
    packages. Imports nothing: the command line runs it before torch is loaded."""
    trusted = tuple(trusted)
    if found := first_untrusted(config, trusted):
        allowed = ", ".join((*PROJECT_TARGETS, *trusted))
        raise DigitlabError(
            f"{found} is not allowed: a config may only name code under {allowed} (pick an "
            "option of the group, or trust your own module with trusted_targets=[mypkg])"
        )


# --- The registry: what digitlab builds from a config, by kind ------------------------------

# Kinds of what a config builds; a nested ``_target_`` of a trusted config may be any of them.
KINDS = (
    "network",
    "data module",
    "data source",
    "augmentation",
    "optimizer",
    "scheduler",
    "callback",
)

# digitlab's own buildable callables, by kind: each module that defines one registers it with
# :func:`buildable` as it is defined, so this floor names no package above it and an object a
# name resolves to was registered before the name could reach it (resolving imports its module).
_BUILT: dict[str, list[Any]] = {kind: [] for kind in KINDS}

Built = TypeVar("Built", bound=Callable[..., Any])


def buildable(kind: str) -> Callable[[Built], Built]:
    """Decorator: a config may build the decorated class or function as a ``kind``
    (``@buildable("network")``). The mark is the whole of what puts digitlab's code within a
    config's reach, so it sits on the definition, where a reader sees it."""
    if kind not in _BUILT:
        raise ValueError(f"no kind {kind!r}: one of {', '.join(KINDS)}")

    def register(obj: Built) -> Built:
        if not any(obj is known for known in _BUILT[kind]):
            _BUILT[kind].append(obj)
        return obj

    return register


def _public_subclasses(module: Any, base: type | tuple[type, ...]) -> list[Any]:
    found = (getattr(module, name, None) for name in getattr(module, "__all__", dir(module)))
    return [c for c in found if inspect.isclass(c) and issubclass(c, base)]


# torch and Lightning are imported here, on first use, never with this module: the command line
# checks a config's names before it pays for them (torch.optim 4 s, Lightning's callbacks 12 s).
def _optimizers() -> list[Any]:
    import torch.optim

    return _public_subclasses(torch.optim, torch.optim.Optimizer)


def _schedulers() -> list[Any]:
    from torch.optim import lr_scheduler

    bases = (lr_scheduler.LRScheduler, lr_scheduler.ReduceLROnPlateau)
    return _public_subclasses(lr_scheduler, bases)


def _lightning_callbacks() -> list[Any]:
    from lightning.pytorch import callbacks

    return _public_subclasses(callbacks, callbacks.Callback)


# What other libraries offer a config, read from the library (imported on first use only).
LIBRARIES: dict[str, Callable[[], list[Any]]] = {
    "optimizer": _optimizers,
    "scheduler": _schedulers,
    "callback": _lightning_callbacks,
}


# What the arguments of a built kind must be, by key: a data module's readers and augmentation.
NESTED: dict[str, dict[str, str]] = {
    "data module": {"source": "data source", "predict": "data source", "augment": "augmentation"},
}


@functools.cache
def _library(kind: str) -> tuple[Any, ...]:
    return tuple(LIBRARIES[kind]()) if kind in LIBRARIES else ()


def registry(kind: str) -> tuple[Any, ...]:
    """The callables of one kind that configs may name: digitlab's that are registered by now
    (:func:`buildable`; a module's are once it is imported) and the library's (imported here)."""
    return (*_BUILT[kind], *_library(kind))


def _registered(obj: Any, kinds: Iterable[str]) -> bool:
    return any(obj is known for kind in kinds for known in registry(kind))


def _defined_in(obj: Any, trusted: Iterable[str]) -> bool:
    """A class or plain function whose own module lies in a trusted package."""
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return False
    return _root_of(str(getattr(obj, "__module__", "") or ""), trusted) is not None


class Refused(DigitlabError):
    """A ``_target_`` (or value) refused: ``key`` names it, ``reason`` says why; ``trust_helps``
    when trusting a module would accept it (it is the user's code, not a nested call or an
    interpolation)."""

    def __init__(self, key: str, reason: str, trust_helps: bool = True) -> None:
        super().__init__(f"{key} {reason}")
        self.key, self.reason, self.trust_helps = key, reason, trust_helps


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def resolve(target: Any, kinds: Iterable[str], trusted: Iterable[str] = ()) -> Any:
    """The callable ``target`` names, if it is one of ``kinds``' registry or defined in a
    ``trusted`` package; else :class:`Refused` saying why. Names outside the allowed packages
    are refused before anything is imported."""
    kinds, trusted = tuple(kinds), tuple(str(t).rstrip(".") for t in trusted)
    key = f"_target_={target}"
    if not is_allowed(str(target), trusted):
        raise Refused(key, f"names code outside {', '.join((*PROJECT_TARGETS, *trusted))}")
    try:
        obj = locate(str(target))
    except Exception:  # ImportError, AttributeError, and whatever a broken module raises
        raise Refused(key, "names nothing that exists") from None
    named_trusted = bool(trusted) and _root_of(str(target), trusted) is not None
    if _registered(obj, kinds) or (named_trusted and _defined_in(obj, trusted)):
        return obj
    what = " or ".join(kinds) if kinds else "callable"
    raise Refused(key, f"resolves to {_describe(obj)}, not {_a(what)} digitlab builds")


def locate(name: str) -> Any:
    """What the dotted ``name`` names: its longest importable module, then attributes (as
    Hydra's own lookup does, written here because Hydra's is private)."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            found = getattr(found, part)
        return found
    raise ImportError(f"no module in {name}")


def _describe(obj: Any) -> str:
    """``module.qualname`` of what a name resolved to, for the message; never raises (some
    objects' attribute lookups do, e.g. torch's class namespaces)."""
    try:
        return f"{obj.__module__}.{obj.__qualname__}"
    except Exception:
        return f"an object of type {type(obj).__module__}.{type(obj).__qualname__}"


def check_resolved(node: Any, kind: str, trusted: Iterable[str] = (), *, path: str = "") -> None:
    """Check every ``_target_`` in ``node`` (a config node of ``kind``) by what it resolves to.

    The top-level target must be of ``kind``; a nested one of the kind :data:`NESTED` names for
    its key (a data module's ``source`` is a data source), other nested ones (a trusted
    config's) of any kind. Raises :class:`Refused`.
    """
    trusted = tuple(trusted)
    for where, target in _targets(node):
        try:
            own = NESTED.get(kind, {}).get(where.removesuffix("."))
            kinds = (kind,) if not where else (own,) if own else tuple(KINDS)
            resolve(target, kinds, trusted)
        except Refused as e:
            raise Refused(f"{path}{where}{e.key}", e.reason) from None


def _interpolation(node: Any, path: str = "") -> str | None:
    """The key path of the first string holding ``${`` (which Hydra would resolve), else None."""
    if isinstance(node, str):
        return (path.rstrip(".") or "value") if "${" in node else None
    items = (
        node.items()
        if isinstance(node, Mapping)
        else enumerate(node)
        if isinstance(node, list | tuple)
        else ()
    )
    for key, value in items:
        if found := _interpolation(value, f"{path}{key}."):
            return found
    return None


def build(
    node: Any, kind: str, trusted: Iterable[str] = (), *, path: str = "", **kwargs: Any
) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` of the command's own config node once
    :func:`check_resolved` passes; the checked plain copy is what gets instantiated, so
    nothing can change in between. A refusal is one DigitlabError saying how to pick an option
    or trust a module instead."""
    # Lazy: Hydra takes 0.3 s to import, which what reads stored state (predict, serve, load:
    # resolve, never build) does not need.
    from hydra.utils import instantiate

    if isinstance(node, DictConfig | ListConfig):
        node = OmegaConf.to_container(node, resolve=True)
    elif isinstance(node, Mapping):
        node = dict(node)
    try:
        check_resolved(node, kind, trusted, path=path)
        if found := _interpolation(node):  # resolved: a literal "${" left
            raise Refused(
                f"{path}{found}",
                "holds an interpolation after resolving: escape nothing there",
                trust_helps=False,
            )
    except Refused as e:
        raise DigitlabError(
            f"{e.key} is not allowed: it {e.reason} (pick an option of the group, or trust "
            "your own module with trusted_targets=[mypkg])"
        ) from None
    return instantiate(node, **kwargs)

"""Which code a config may name in ``_target_``, checked on what the name resolves to.

Hydra imports and calls whatever ``_target_`` names, and a dotted name walks attributes
(``digitlab.models.lenet.torch.load``). So a name passes a text check first (a public dotted
path under an allowed package: a refused name imports nothing), then must resolve to a callable
of :func:`registry` (what digitlab's modules mark :func:`buildable`, ``torch.optim``'s optimizers
and schedulers, Lightning's callbacks) or to a class or function *defined* in a module the user
trusts (``trusted_targets=[mypkg]``, ``--trust mypkg``). The packages that define what a config
builds register it here, so this floor imports nothing above it. Stored state never comes to
:func:`build`: it is parsed first (:func:`digitlab.config.spec.read_run`) and its one network
looked up with :func:`resolve`.
"""

from __future__ import annotations

import functools
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
    return bool(NAME.fullmatch(str(target))) and _within(str(target), (*PROJECT_TARGETS, *trusted))


def _within(name: str, roots: Iterable[str]) -> bool:
    """Whether ``name`` is one of the modules ``roots`` or lies inside one."""
    stems = (str(root).rstrip(".") for root in roots)
    return any(name == stem or name.startswith(stem + ".") for stem in stems)


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


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """``(key path, value)`` of every entry of ``node``, at any depth."""
    if isinstance(node, DictConfig | ListConfig):
        node = OmegaConf.to_container(node, resolve=False)
    items: Iterable[tuple[Any, Any]] = ()
    if isinstance(node, Mapping):
        items = node.items()
    elif isinstance(node, list | tuple):
        items = enumerate(node)
    for key, value in items:
        yield f"{path}{key}", value
        yield from _walk(value, f"{path}{key}.")


def _targets(config: Any) -> Iterator[tuple[str, Any]]:
    """``(key path of its node, value)`` of every ``_target_`` in ``config``."""
    for where, value in _walk(config):
        if where.rpartition(".")[2] == "_target_":
            yield where.removesuffix("_target_"), value


def check_targets(config: Any, trusted: Iterable[str] = ()) -> None:
    """Raise DigitlabError if a ``_target_``'s text in ``config`` is outside the allowed
    packages. Imports nothing: the command line runs it before torch is loaded."""
    trusted = tuple(trusted)
    for where, target in _targets(config):
        if not is_allowed(str(target), trusted):
            raise DigitlabError(
                f"{where}_target_={target} is not allowed: a config may only name code under "
                f"{', '.join((*PROJECT_TARGETS, *trusted))} (pick an option of the group, or "
                "trust your own module with trusted_targets=[mypkg])"
            )


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
# digitlab's own, registered by :func:`buildable` where each is defined, so an object a name
# resolves to was registered before the name could reach it (resolving imports its module).
_BUILT: dict[str, list[Any]] = {kind: [] for kind in KINDS}
# What the arguments of a built kind must be, by key: a data module's readers and augmentation.
NESTED: dict[str, dict[str, str]] = {
    "data module": {"source": "data source", "predict": "data source", "augment": "augmentation"},
}

Built = TypeVar("Built", bound=Callable[..., Any])


def buildable(kind: str) -> Callable[[Built], Built]:
    """Decorator: a config may build the decorated class or function as a ``kind``
    (``@buildable("network")``); the mark sits on the definition, where a reader sees it."""
    if kind not in _BUILT:
        raise ValueError(f"no kind {kind!r}: one of {', '.join(KINDS)}")

    def register(obj: Built) -> Built:
        if not any(obj is known for known in _BUILT[kind]):
            _BUILT[kind].append(obj)
        return obj

    return register


@functools.cache
def _library(kind: str) -> tuple[Any, ...]:
    """What torch and Lightning offer a config as ``kind``. Imported here, on first use, never
    with this module: the command line checks names before it pays for them (torch.optim 4 s,
    Lightning's callbacks 12 s)."""
    module: Any
    bases: tuple[type, ...]
    if kind == "optimizer":
        import torch.optim

        module, bases = torch.optim, (torch.optim.Optimizer,)
    elif kind == "scheduler":
        from torch.optim import lr_scheduler

        module, bases = lr_scheduler, (lr_scheduler.LRScheduler, lr_scheduler.ReduceLROnPlateau)
    elif kind == "callback":
        from lightning.pytorch import callbacks

        module, bases = callbacks, (callbacks.Callback,)
    else:
        return ()
    found = (getattr(module, name, None) for name in getattr(module, "__all__", dir(module)))
    return tuple(c for c in found if inspect.isclass(c) and issubclass(c, bases))


def registry(kind: str) -> tuple[Any, ...]:
    """The callables of one kind that configs may name: digitlab's registered by now (a module's
    are once it is imported) and the library's."""
    return (*_BUILT[kind], *_library(kind))


class Refused(DigitlabError):
    """A ``_target_`` (or value) refused: ``key`` names it, ``reason`` says why."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key} {reason}")
        self.key, self.reason = key, reason


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
    # Lazy: pydoc takes 40 ms to import, which the command line's check (no name resolved) skips.
    import pydoc

    try:  # pydoc's lookup, as Hydra's own (private) one: the longest module, then attributes
        obj = pydoc.locate(str(target))
    except Exception:  # pydoc.ErrorDuringImport: whatever a broken module raises
        obj = None
    if obj is None:
        raise Refused(key, "names nothing that exists")
    if any(obj is known for kind in kinds for known in registry(kind)):
        return obj
    # A class or plain function of the user's, named and *defined* inside a trusted package.
    if (inspect.isclass(obj) or inspect.isfunction(obj)) and _within(str(target), trusted):
        if _within(str(getattr(obj, "__module__", "") or ""), trusted):
            return obj
    what = " or ".join(kinds) if kinds else "callable"
    raise Refused(key, f"resolves to {_describe(obj)}, not {_a(what)} digitlab builds")


def _describe(obj: Any) -> str:
    """``module.qualname`` of what a name resolved to, for the message; never raises (some
    objects' attribute lookups do, e.g. torch's class namespaces)."""
    try:
        return f"{obj.__module__}.{obj.__qualname__}"
    except Exception:
        return f"an object of type {type(obj).__module__}.{type(obj).__qualname__}"


def build(
    node: Any, kind: str, trusted: Iterable[str] = (), *, path: str = "", **kwargs: Any
) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` of the command's own config node once every
    ``_target_`` in it resolves to its kind: the top one to ``kind``, a nested one to the kind
    :data:`NESTED` names for its key (a data module's ``source``), others (a trusted config's)
    to any. The checked plain copy is what gets instantiated, so nothing changes in between."""
    # Lazy: Hydra takes 0.3 s to import, which what reads stored state (predict, serve, load:
    # resolve, never build) does not need.
    from hydra.utils import instantiate

    if isinstance(node, DictConfig | ListConfig):
        node = OmegaConf.to_container(node, resolve=True)
    elif isinstance(node, Mapping):
        node = dict(node)
    trusted = tuple(trusted)
    try:
        for where, target in _targets(node):
            own = NESTED.get(kind, {}).get(where.removesuffix("."))
            kinds = (kind,) if not where else (own,) if own else KINDS
            try:
                resolve(target, kinds, trusted)
            except Refused as e:
                raise Refused(f"{path}{where}{e.key}", e.reason) from None
        for where, value in _walk(node):  # resolved: a literal "${" left, Hydra would resolve
            if isinstance(value, str) and "${" in value:
                raise Refused(
                    f"{path}{where}", "holds an interpolation after resolving: escape nothing there"
                )
    except Refused as e:
        raise DigitlabError(
            f"{e.key} is not allowed: it {e.reason} (pick an option of the group, or trust "
            "your own module with trusted_targets=[mypkg])"
        ) from None
    return instantiate(node, **kwargs)

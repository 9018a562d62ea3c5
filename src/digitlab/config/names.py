"""The words of a ``digitlab`` command line, checked against what exists before Hydra runs it.

Hydra skips a misspelt preset without a word (``experiment`` is an optional group), answers a
misspelt option or key in 7-13 lines, suggests ``+key=value`` for a misspelt key (which then fails
inside the optimizer once torch has loaded), and creates the output folder before digitlab gets
to check it. Here, in a fraction of a second and without torch: each ``group=option`` (each value
of a sweep too) against the group's options, each ``key=value`` against the config the chosen
options compose, each added ``+key`` against what is there and against the arguments of what is
built from its node (:mod:`digitlab.config.signatures`), and the output folder for being
writable. Each failure is one DigitlabError naming the word and the closest valid ones.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from digitlab.config import config_groups, register_resolvers
from digitlab.config.signatures import argument_names
from digitlab.errors import DigitlabError

# Hydra's flags under which a command composes another config, or none: Hydra answers those.
OTHER_CONFIG = (
    "config_path",
    "config_name",
    "config_dir",
    "experimental_rerun",
    "info",
    "shell_completion",
    "hydra_help",
)
# Config nodes that are keyword arguments of a class without naming it in a ``_target_``.
BUILT_BY = {"trainer": "lightning.pytorch.Trainer"}
# Hydra's keys in a node with a ``_target_``: instructions to Hydra, not arguments.
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")
GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"
_ABSENT = object()


def check_command_line(
    argv: list[str], conf_dir: Path, sweep_hint: str = "add -m to run one job per value"
) -> None:
    """Raise DigitlabError for the first word of ``argv`` (the command's arguments) that names
    no option, key or argument, for a sweep without ``-m``, and for an output folder that cannot
    be written. Arguments that make Hydra compose another config are left to Hydra."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    args = _hydra_arguments(argv)
    if args is None or any(getattr(args, flag, None) for flag in OTHER_CONFIG):
        return
    if args.multirun and args.cfg:  # Hydra: a ValueError and its trace
        raise DigitlabError(
            f"--cfg {args.cfg} prints one job's config, -m runs several: drop -m and give each "
            "swept key one value to see that job's config"
        )
    overrides = _parse(args.overrides)
    if not args.multirun:
        _refuse_sweeps(overrides, sweep_hint)
    # The app's groups from conf/'s folders: Hydra's loader copies its whole repository per
    # question (0.1 s each); it is asked only about the hydra/... groups a command names.
    # hydra.searchpath adds folders of the user's own: their groups and options are Hydra's to
    # find, and a bad one is Hydra's composition error (in one line here).
    extended = any(o.key_or_group.startswith("hydra.searchpath") for o in overrides)
    groups = {} if extended else config_groups(conf_dir)
    choices = [o for o in overrides if o.key_or_group in groups or "/" in o.key_or_group]
    keys = [o for o in overrides if o not in choices]
    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3", job_name="digitlab"):
        if extended:
            cfg, added = (
                _compose([o.input_line for o in overrides if not o.is_sweep_override()]),
                [],
            )
        else:
            _check_options(choices, groups, GlobalHydra.instance().config_loader())
            cfg, added = _compose_checked(_combinations(choices), keys, groups)
    _check_additions(added, cfg)
    if not (args.cfg or args.help):
        _check_output_folder(cfg, "hydra.sweep.dir" if args.multirun else "hydra.run.dir")


def _hydra_arguments(argv: list[str]) -> Any:
    """``argv`` read by Hydra's own argument parser (the flags, ``-m``, the overrides), or None
    where Hydra would refuse it or answer at once (``--version``): it then speaks for itself."""
    from hydra._internal.utils import get_args_parser

    def read(words: list[str]) -> Any:
        quiet = io.StringIO()
        with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
            try:
                return get_args_parser().parse_args(words)
            except SystemExit:
                return None

    args = read(argv)
    if args is not None:
        return args
    # An override written as a flag (--model=mlp, --model mlp): argparse answers with its usage.
    for i, word in enumerate(argv):
        name, equals, value = word.lstrip("-").partition("=")
        if not word.startswith("-") or not name or read([word]) is not None:
            continue
        after = argv[i + 1] if i + 1 < len(argv) else "-"
        if not equals and (after.startswith("-") or "=" in after or read([word, after])):
            continue
        given = word if equals else f"{word} {after}"
        raise DigitlabError(
            f"{given}: Hydra overrides have no dashes: {name}={value if equals else after}"
        )
    flags = [a for a in argv if a.startswith("-")]
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    if any(argv.index(flag) > first for flag in flags if flag in ("-m", "--multirun")):
        # argparse cannot read flags after overrides; Hydra would print its usage, no reason.
        raise DigitlabError(
            f"{flags[0]} must come before the overrides: digitlab {' '.join(flags)} "
            f"{' '.join(a for a in argv if not a.startswith('-'))}"
        )
    return None


def _parse(lines: list[str]) -> list:
    """Hydra's reading of each override, or one line saying which one it cannot read."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser, parsed = OverridesParser.create(), []
    for line in lines:
        try:
            parsed += parser.parse_overrides([line])
        except OverrideParseException as e:
            reason = "; ".join(str(e).split("\nSee ")[0].splitlines())
            raise DigitlabError(
                f"cannot read the override {line!r} ({reason}): write group=option or "
                f"key=value, see Hydra's override grammar ({GRAMMAR})"
            ) from None
    return parsed


def _refuse_sweeps(overrides: list, how: str = "add -m to run one job per value") -> None:
    # Without -m Hydra answers a comma list with four lines of choices; a run takes one value.
    for o in overrides:
        if o.is_sweep_override():
            raise DigitlabError(
                f"{o.input_line} is a sweep: {how} (a list value is written [a,b], a string "
                "with commas quoted: key='a,b')"
            )


def _all_groups(loader: Any, parent: str = "") -> Iterable[str]:
    """Every config group, ``hydra/...`` and the plugins' included."""
    for name in loader.list_groups(parent):
        group = f"{parent}/{name}" if parent else name
        yield group
        yield from _all_groups(loader, group)


def _values(override: Any) -> list[str | None]:
    """The options an override picks: one, a list (several configs of one group) or, in a sweep,
    each value of the list; none for a glob or a range (Hydra expands those itself)."""
    from hydra.core.override_parser.types import ChoiceSweep

    value = override.value()
    if override.is_sweep_override():
        value = value.list if isinstance(value, ChoiceSweep) else []
    elif not isinstance(value, list):
        value = [value]
    return [None if v is None else str(v) for v in value]


def _check_options(choices: list, groups: dict[str, list[str]], loader: Any) -> None:
    for o in choices:
        group = o.key_or_group
        options = groups.get(group) or sorted(loader.get_group_options(group))
        if not options:
            known = sorted({*groups, *_all_groups(loader)} - {"hydra"})
            raise DigitlabError(
                f"{group} is not a config group: " + _suggest(group, known, listing="groups")
            )
        for value in [] if o.is_delete() else _values(o):
            if value is None:  # Hydra stops with a ValueError's trace
                raise DigitlabError(
                    f"{group}=null is not an option of {group}: leave the group out with "
                    f"~{group}, or choose one of {', '.join(options)}"
                )
            if value not in options:
                raise DigitlabError(
                    f"{group}={value} is not an option of {group}: "
                    + _suggest(value, options, listing="options")
                )


def _combinations(choices: list) -> list[tuple[list[str], list[str]]]:
    """``(overrides to compose, the swept choices among them)`` per set of options to check keys
    against: the first value of every swept group, then each other value of one group at a time.
    Each is a job of the sweep; a key missing from any of them would fail that job."""
    fixed = [o.input_line for o in choices if not o.is_sweep_override()]
    swept = [(o.get_key_element(), _values(o)) for o in choices if o.is_sweep_override()]
    swept = [(key, values) for key, values in swept if values]
    first = [f"{key}={values[0]}" for key, values in swept]
    found = [([*fixed, *first], first)]
    for i, (key, values) in enumerate(swept):
        for value in values[1:]:
            picked = [*first[:i], f"{key}={value}", *first[i + 1 :]]
            found.append(([*fixed, *picked], picked))
    return found


def _compose_checked(combinations: list, keys: list, groups: dict) -> tuple[DictConfig, list]:
    """The config of the first set of options with every override applied (sweeps aside), and
    the overrides that add a key. Keys are checked one by one (a config per set of options) in a
    sweep, or where Hydra refuses the overrides, to name the word; else one config is enough."""
    added = None
    if len(combinations) > 1 or any(o.is_sweep_override() or o.is_force_add() for o in keys):
        labels = [
            f" with {' '.join(swept)}" if len(combinations) > 1 else "" for _, swept in combinations
        ]
        added = [
            _check_keys(keys, _compose(chosen), groups, label)
            for (chosen, _), label in zip(combinations, labels, strict=True)
        ][0]
    try:
        cfg = _compose(
            [*combinations[0][0], *(o.input_line for o in keys if not o.is_sweep_override())]
        )
    except DigitlabError:
        if added is None:
            _check_keys(keys, _compose(combinations[0][0]), groups, "")
        raise
    # Hydra has refused a + on a key that is there: each one adds a key.
    return cfg, [o for o in keys if o.is_add()] if added is None else added


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose

    try:
        return compose("config", overrides=overrides, return_hydra_config=True)
    # What the checks here do not name (Hydra raises ValueError for some malformed overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise DigitlabError(one_line(str(e))) from None


def _exists(cfg: DictConfig, key: str) -> bool:
    parent_key, _, last = key.rpartition(".")
    parent = (
        OmegaConf.select(cfg, parent_key, default=_ABSENT, throw_on_resolution_failure=False)
        if parent_key
        else cfg
    )
    if isinstance(parent, DictConfig):
        return last in parent.keys()
    return isinstance(parent, ListConfig) and last.isdigit() and int(last) < len(parent)


def _check_keys(keys: list, cfg: DictConfig, groups: dict, label: str) -> list:
    """Refuse a key that is not in ``cfg`` (``key=value``, ``~key``) or is already there
    (``+key``); return the overrides that add a key."""
    added, names = [], []
    for o in keys:
        key = o.key_or_group
        there = _exists(cfg, key)
        if o.is_add() and there:
            raise DigitlabError(
                f"{o.get_key_element()}: {key} is already in the config{label}: set it without "
                f"the +, {key}={o.input_line.partition('=')[2]}"
            )
        if o.is_add() or (o.is_force_add() and not there):
            added.append(o)
            names.append(key)
        elif not there and not any(key.startswith(f"{n}.") or key == n for n in names):
            raise _unknown_key(cfg, key, groups, label)
    return added


def _unknown_key(cfg: DictConfig, key: str, groups: dict, label: str) -> DigitlabError:
    """One line for a key not in the config: where the path leaves it, and the nearest keys."""
    parts, node, depth = key.split("."), cfg, 0
    while depth < len(parts) and _exists(node, parts[depth]):
        node = OmegaConf.select(node, parts[depth], throw_on_resolution_failure=False)
        depth += 1
    where = ".".join(parts[:depth])
    problem = f"{key} is not a key of the config{label}"
    if not isinstance(node, DictConfig):
        what = "null" if node is None else "a list" if isinstance(node, ListConfig) else "a value"
        return DigitlabError(f"{problem}: {where} is {what} (set {where}=... itself)")
    known = [k for k in node.keys() if k not in HYDRA_KEYS and (depth or k != "hydra")]
    if not depth:  # a misspelt group name on its own (modle=mlp) is a top-level key here
        known = sorted({*known, *groups})
    rest = "." + ".".join(parts[depth + 1 :]) if depth + 1 < len(parts) else ""
    close = [f"{where + '.' if where else ''}{k}{rest}" for k in _closest(parts[depth], known)]
    # a key of that name elsewhere (max_epochs=1 for trainer.max_epochs=1) comes first
    named = [k for k in _keys_named(cfg, parts[-1]) if k != key]
    close = list(dict.fromkeys([*named, *close]))[:3]
    keys = f"{where}'s keys: {', '.join(known)}" if depth else f"top-level keys: {', '.join(known)}"
    if close:
        return DigitlabError(f"{problem}: did you mean {_or(close)}? ({keys})")
    return DigitlabError(f"{problem}: {keys}")


def _keys_named(cfg: DictConfig, name: str) -> list[str]:
    """The dotted paths of ``cfg``'s keys called ``name`` (Hydra's own node left out)."""
    found: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if not isinstance(node, dict):
            return
        for k, child in node.items():
            path = f"{prefix}{k}"
            if path == "hydra":
                continue
            if k == name:
                found.append(path)
            walk(child, f"{path}.")

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return found


def _check_additions(added: list, cfg: DictConfig) -> None:
    """An added key inside a node that is built (one with a ``_target_``, or the Trainer's) must
    be an argument of what is built: the class's constructor is the node's schema."""
    for o in added:
        parts = o.key_or_group.split(".")
        for depth in range(len(parts) - 1, 0, -1):
            where, argument = ".".join(parts[:depth]), parts[depth]
            target = _built_from(cfg, where)
            if target is None:
                continue
            names = argument_names(target) if argument not in HYDRA_KEYS else None
            if names is not None and argument not in names:
                raise DigitlabError(
                    f"{o.get_key_element()}: {target} takes no argument {argument}: "
                    + _suggest(
                        argument, list(names), listing=f"{target}'s arguments", prefix=f"{where}."
                    )
                )
            break


def _built_from(cfg: DictConfig, where: str) -> str | None:
    node = OmegaConf.select(cfg, where, default=None, throw_on_resolution_failure=False)
    if isinstance(node, DictConfig) and "_target_" in node.keys():
        target = OmegaConf.select(node, "_target_", throw_on_resolution_failure=False)
        return str(target) if target else None
    return BUILT_BY.get(where)


def _check_output_folder(cfg: DictConfig, key: str) -> None:
    """Hydra creates the output folder and writes the config there before the job starts: a
    folder that cannot be written would fail there, with a trace."""
    folder = Path(str(OmegaConf.select(cfg, key)))
    problem = _unwritable(folder)
    if problem:
        raise DigitlabError(
            f"the output folder {folder} cannot be written ({problem}): set {key} to a folder "
            "you can write"
        )


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be made in ``folder`` once it is created, or None. Nothing is left
    behind: the nearest existing folder is tried (root may create files where others may not)."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            return None
    except OSError as e:
        return f"creating a file in {existing} fails: {e.strerror}"


def _closest(word: str, choices: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)


def _or(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _suggest(word: str, choices: list[str], listing: str, prefix: str = "") -> str:
    """``did you mean <the closest>? (<listing>: ...)``, or the list alone if nothing is close."""
    shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    close = [f"{prefix}{c}" for c in _closest(word, choices)]
    if close:
        return f"did you mean {_or(close)}? ({listing}: {shown})"
    return f"choose one of {shown}" if listing == "options" else f"{listing}: {shown}"


def one_line(message: str) -> str:
    """Hydra's multi-line composition error as one line, its list of valid options kept."""
    text = message.split("\nConfig search path:")[0]
    head, _, options = text.partition("\n\nAvailable options in ")
    line = "; ".join(part.strip().rstrip(".") for part in head.splitlines() if part.strip())
    if options:
        group, _, names = options.partition(":")
        line += f"; available options in {group}: {', '.join(names.split())}"
    return line

"""The words of a ``digitlab`` command line, checked before Hydra runs them, without torch.

Hydra skips a misspelt optional preset without a word, answers a misspelt option or key in 7-13
lines, and creates the output folder before digitlab gets to check it. Here each word is checked
(docs/errors.md lists how) and each failure is one DigitlabError naming the word and the closest
valid ones.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from digitlab.config import closest, config_groups, either, register_resolvers, suggest
from digitlab.errors import DigitlabError

# Hydra's flags under which a command composes another config, or prints and stops: Hydra answers.
OTHER_CONFIG = ["config_path", "config_name", "config_dir", "experimental_rerun", "info"]
OTHER_CONFIG += ["shell_completion", "hydra_help", "version"]
# Config nodes that are keyword arguments of a class without naming it in a ``_target_``.
BUILT_BY = {"trainer": "lightning.pytorch.Trainer"}
# Hydra's keys in a node with a ``_target_``: instructions to Hydra, not arguments.
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")
GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"
_ABSENT = object()


def _flags() -> argparse.ArgumentParser:
    """The flags ``hydra.main`` reads (its ``--help`` lists them), then the overrides."""
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    switches = "-h --help|--hydra-help|--version|--resolve|-r --run|-m --multirun"
    for flag in [*switches.split("|"), "-sc --shell-completion"]:
        parser.add_argument(*flag.split(), action="store_true")
    named = "-c --cfg|-p --package|-cp --config-path|-cn --config-name|-cd --config-dir"
    for flag in [*named.split("|"), "--experimental-rerun"]:
        parser.add_argument(*flag.split())
    parser.add_argument("--info", "-i", nargs="?", const="all")
    parser.add_argument("overrides", nargs="*")
    return parser


def check_command_line(
    argv: list[str], conf_dir: Path, sweep_hint: str = "add -m to run one job per value"
) -> DictConfig | None:
    """The config ``argv`` composes, its ``hydra`` node included (the first job's, for a sweep),
    or None where Hydra answers itself (another config, a usage error). Raise DigitlabError
    for the first word that names nothing, a sweep without ``-m``, an unwritable output folder."""
    args = _arguments(argv)
    if args is None or any(getattr(args, flag) for flag in OTHER_CONFIG):
        return None
    if args.multirun and args.cfg:  # Hydra: a ValueError and its trace
        raise DigitlabError(
            f"--cfg {args.cfg} prints one job's config, -m runs several: drop -m and give each "
            "swept key one value to see that job's config"
        )
    overrides = _parse(args.overrides)
    for o in [] if args.multirun else overrides:  # Hydra: four lines of choices
        if o.is_sweep_override():
            raise DigitlabError(
                f"{o.input_line} is a sweep: {sweep_hint} (a list value is written [a,b], a "
                "string with commas quoted: key='a,b')"
            )
    # hydra.searchpath adds folders of the user's own: their groups and options are Hydra's to
    # find, and a bad one is Hydra's composition error (in one line here).
    extended = any(o.key_or_group.startswith("hydra.searchpath") for o in overrides)
    groups = {} if extended else config_groups(conf_dir)
    choices = [o for o in overrides if o.key_or_group in groups or "/" in o.key_or_group]
    keys = [o for o in overrides if o not in choices]
    _check_options(choices, groups)
    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3", job_name="digitlab"):
        if extended:
            cfg = _compose([o.input_line for o in overrides if not o.is_sweep_override()], groups)
        else:
            cfg = _compose_checked(_combinations(choices), keys, groups)
    _check_additions([o for o in keys if o.is_add() or o.is_force_add()], cfg)
    if not (args.cfg or args.help):
        _check_output_folder(cfg, "hydra.sweep.dir" if args.multirun else "hydra.run.dir")
    return cfg


def _arguments(argv: list[str]) -> argparse.Namespace | None:
    """``argv``'s flags and overrides, or None where Hydra refuses them itself (its usage)."""
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            args, extra = _flags().parse_known_args(argv)
        except (argparse.ArgumentError, SystemExit):
            return None
    for word in extra:
        if word.startswith("-"):  # an override written as a flag: --model=mlp, --model mlp
            name, equals, value = word.lstrip("-").partition("=")
            after = argv[argv.index(word) + 1 : argv.index(word) + 2] or ["-"]
            if not equals and (after[0].startswith("-") or "=" in after[0]):
                return None
            given = word if equals else f"{word} {after[0]}"
            raise DigitlabError(
                f"{given}: Hydra overrides have no dashes: {name}={value if equals else after[0]}"
            )
    if extra:  # argparse reads overrides before a flag or after it, not both
        flags = [a for a in argv if a.startswith("-")]
        raise DigitlabError(
            f"{flags[0]} must come before the overrides: digitlab {' '.join(flags)} "
            f"{' '.join(a for a in argv if not a.startswith('-'))}"
        )
    return args


def _parse(lines: list[str]) -> list:
    """Hydra's reading of each override, or one line saying which one it cannot read."""
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


def _values(override: Any) -> list[str | None]:
    """The options an override picks (each value of a sweep's list; none for a glob or a range,
    which Hydra expands itself)."""
    value = override.value()
    if override.is_sweep_override():
        value = value.list if isinstance(value, ChoiceSweep) else []
    elif not isinstance(value, list):
        value = [value]
    return [None if v is None else str(v) for v in value]


def _check_options(choices: list, groups: dict[str, list[str]]) -> None:
    """Each option of conf/'s groups against the group's files (a missing one of Hydra's own
    groups is named by :func:`_compose`)."""
    for o in choices:
        group, options = o.key_or_group, groups.get(o.key_or_group)
        for value in [] if o.is_delete() else _values(o):
            if value is None:  # Hydra stops with a ValueError's trace
                raise DigitlabError(
                    f"{group}=null is not an option of {group}: leave the group out with "
                    f"~{group}" + (f", or choose one of {', '.join(options)}" if options else "")
                )
            if options is not None and value not in options:
                raise DigitlabError(
                    f"{group}={value} is not an option of {group}: "
                    + suggest(value, options, listing="options")
                )


def _combinations(choices: list) -> list[tuple[list[str], list[str]]]:
    """``(overrides to compose, the swept choices among them)`` per set of options whose config
    each key must be in: the first value of every swept group, then each other value of one
    group at a time."""
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


def _compose_checked(combinations: list, keys: list, groups: dict) -> DictConfig:
    """The config of the first set of options with every override applied (sweeps aside); keys
    are checked in each set's config where a sweep has several or Hydra refuses them."""
    several = len(combinations) > 1
    for chosen, swept in (
        combinations if several or any(o.is_sweep_override() for o in keys) else []
    ):
        _check_keys(keys, _compose(chosen, groups), groups, f" with {' '.join(swept)}" * several)
    try:
        return _compose(
            [*combinations[0][0], *(o.input_line for o in keys if not o.is_sweep_override())],
            groups,
        )
    except DigitlabError:
        _check_keys(keys, _compose(combinations[0][0], groups), groups, "")
        raise


def _compose(overrides: list[str], groups: dict) -> DictConfig:
    """The composed config, or Hydra's refusal in one line."""
    try:
        return compose("config", overrides=overrides, return_hydra_config=True)
    except MissingConfigException as e:  # an option of a group: Hydra lists the group's options
        group, _, value = str(e.missing_cfg_file).rpartition("/")
        if group and e.options:
            raise DigitlabError(
                f"{group}={value} is not an option of {group}: "
                + suggest(value, list(e.options), listing="options")
            ) from None
        raise DigitlabError(one_line(str(e))) from None
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        key = str(getattr(e.__cause__, "full_key", "") or "")
        if "/" in key:  # a group that does not exist: Hydra reads it as a key
            raise DigitlabError(
                f"{key} is not a config group: "
                + suggest(key, [*groups, *_hydra_groups()], listing="groups")
            ) from None
        raise DigitlabError(one_line(str(e))) from None


def _hydra_groups(parent: str = "hydra") -> Iterable[str]:
    """Hydra's own groups (``hydra/launcher``...), the plugins' included."""
    for name in GlobalHydra.instance().config_loader().list_groups(parent):
        yield f"{parent}/{name}"
        yield from _hydra_groups(f"{parent}/{name}")


def _exists(cfg: Any, key: str) -> bool:
    parent_key, _, last = key.rpartition(".")
    parent = (
        OmegaConf.select(cfg, parent_key, default=_ABSENT, throw_on_resolution_failure=False)
        if parent_key
        else cfg
    )
    if isinstance(parent, DictConfig):
        return last in parent.keys()
    return isinstance(parent, ListConfig) and last.isdigit() and int(last) < len(parent)


def _check_keys(keys: list, cfg: DictConfig, groups: dict, label: str) -> None:
    """Refuse a key not in ``cfg`` (``key=value``, ``~key``; keys added before it may be set),
    or one already there (``+key``)."""
    added: list[str] = []
    for o in keys:
        key, there = o.key_or_group, _exists(cfg, o.key_or_group)
        if o.is_add() and there:
            raise DigitlabError(
                f"{o.get_key_element()}: {key} is already in the config{label}: set it without "
                f"the +, {key}={o.input_line.partition('=')[2]}"
            )
        if o.is_add() or o.is_force_add():
            added.append(key)
        elif not there and not any(key == n or key.startswith(f"{n}.") for n in added):
            raise _unknown_key(cfg, key, groups, label)


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
    known = [str(k) for k in node.keys() if k not in HYDRA_KEYS and (depth or k != "hydra")]
    if not depth:  # a misspelt group name on its own (modle=mlp) is a top-level key here
        known = sorted({*known, *groups})
    rest = "." + ".".join(parts[depth + 1 :]) if depth + 1 < len(parts) else ""
    close = [f"{where + '.' if where else ''}{k}{rest}" for k in closest(parts[depth], known)]
    # a key of that name elsewhere (max_epochs=1 for trainer.max_epochs=1) comes first
    named = [k for k in _keys_named(OmegaConf.to_container(cfg), parts[-1]) if k != key]
    close = list(dict.fromkeys([*named, *close]))[:3]
    keys = f"{where}'s keys: {', '.join(known)}" if depth else f"top-level keys: {', '.join(known)}"
    return DigitlabError(
        f"{problem}: did you mean {either(close)}? ({keys})" if close else f"{problem}: {keys}"
    )


def _keys_named(node: Any, name: str, prefix: str = "") -> list[str]:
    """The dotted paths of ``node``'s keys called ``name`` (Hydra's own node left out)."""
    found: list[str] = []
    for k, child in node.items() if isinstance(node, dict) else ():
        if f"{prefix}{k}" != "hydra":
            found += [f"{prefix}{k}"] if k == name else []
            found += _keys_named(child, name, f"{prefix}{k}.")
    return found


def _check_additions(added: list, cfg: DictConfig) -> None:
    """An added key inside a built node (a ``_target_``'s, or the Trainer's) must be an argument
    of what is built."""
    for o in added:
        parts = o.key_or_group.split(".")
        for depth in range(len(parts) - 1, 0, -1):
            where, argument = ".".join(parts[:depth]), parts[depth]
            node = OmegaConf.select(cfg, where, default=None, throw_on_resolution_failure=False)
            target = node.get("_target_") if isinstance(node, DictConfig) else None
            target = str(target) if target else BUILT_BY.get(where)
            if target is None:
                continue
            from digitlab.config.spec import arguments, no_argument  # pydantic: 0.3 s, if needed

            names = arguments(target) if argument not in HYDRA_KEYS else None
            if names is not None and argument not in names:
                what = no_argument(target, argument, names, f"{where}.")
                raise DigitlabError(f"{o.get_key_element()}: {what}")
            break


def _check_output_folder(cfg: DictConfig, key: str) -> None:
    """Hydra creates the output folder before the job starts, and fails there with a trace. The
    nearest existing folder is tried with a temporary file (root may write where others may
    not), so nothing is left behind."""
    folder = Path(str(OmegaConf.select(cfg, key)))
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = None if existing.is_dir() else f"{existing} is not a folder"
    try:
        if problem is None:
            with tempfile.TemporaryFile(dir=existing):
                pass
    except OSError as e:
        problem = f"creating a file in {existing} fails: {e.strerror}"
    if problem:
        raise DigitlabError(
            f"the output folder {folder} cannot be written ({problem}): set {key} to a folder "
            "you can write"
        )


def one_line(message: str) -> str:
    """Hydra's multi-line composition error as one line, its list of valid options kept."""
    text = message.split("\nConfig search path:")[0]
    head, _, options = text.partition("\n\nAvailable options in ")
    line = "; ".join(part.strip().rstrip(".") for part in head.splitlines() if part.strip())
    if options:
        group, _, names = options.partition(":")
        line += f"; available options in {group}: {', '.join(names.split())}"
    return line

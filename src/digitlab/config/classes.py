"""What a data set's labels mean: ``data.classes``, a count or the name of each class by label
(on the config floor: the schema checks it before anything is built). No torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from digitlab.errors import DigitlabError

# More classes than any data set of single characters has; a stored config asking for more is
# refused rather than building a network of that width.
MAX_CLASSES = 10_000


def class_names(classes: int | Sequence[Any], key: str = "data.classes") -> tuple[str, ...]:
    """The name of each class, by label: ``10`` -> ("0", ..., "9"); a list of names as given."""
    if isinstance(classes, int) and not isinstance(classes, bool):
        # Bounded before the names are made: a count of 10**12 would take all memory first.
        names = tuple(str(c) for c in range(min(max(classes, 0), MAX_CLASSES + 1)))
    elif isinstance(classes, Sequence) and not isinstance(classes, str | bytes):
        names = tuple(str(c)[:64] for c in classes[: MAX_CLASSES + 1])
    else:
        names = ()
    if not 2 <= len(names) <= MAX_CLASSES or (
        not isinstance(classes, int)
        and not all(isinstance(c, str | int) and not isinstance(c, bool) for c in classes)
    ):
        raise DigitlabError(
            f"{key}={classes!r} is invalid: give the number of classes (e.g. 10) or the name "
            'of each class by label (e.g. ["0", "1", ..., "9"])'
        )
    if any("," in n or "\n" in n or not n.strip() for n in names):
        odd = next(n for n in names if "," in n or "\n" in n or not n.strip())
        raise DigitlabError(
            f"{key} names a class {odd!r}: a name is shown in pictures and written as a CSV "
            "column, so it needs a character and no comma or line break"
        )
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise DigitlabError(f"{key} names the class {twice!r} twice: give each class once")
    return names


def run_classes(config: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The classes of a run's stored config; ten digits for a run stored before data sets
    declared their classes."""
    data = config.get("data") if isinstance(config, Mapping) else None
    classes: Any = data.get("classes", 10) if isinstance(data, Mapping) else 10
    if hasattr(classes, "__iter__") and not isinstance(classes, str | bytes | Mapping):
        classes = list(classes)  # a ListConfig
    return class_names(classes)

"""Hydra's sweep syntax as Optuna distributions: ``interval``, ``choice``, ``range``, ``tag(log)``.

The mapping follows hydra-optuna-sweeper 1.3 (MIT), rewritten for Optuna >= 4, whose
``FloatDistribution`` / ``IntDistribution`` replace the removed ``UniformDistribution``,
``LogUniformDistribution``, ``IntUniformDistribution`` and ``DiscreteUniformDistribution``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer

from digitlab.errors import DigitlabError


def distribution(override: Override) -> Any:
    """The Optuna distribution a sweep override describes, or the fixed value (a string).

    - ``choice(a, b, ...)`` and ``shuffle(range(...))``: categorical;
    - ``range(start, stop[, step])``: int (or float) with that step, ``stop`` excluded;
    - ``interval(low, high)``: float, or int when both bounds are ints; ``tag(log, ...)`` samples
      it on a log scale.
    """
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        choices = override.sweep_iterator(transformer=Transformer.encode)
        return CategoricalDistribution(list(choices))
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep)
        step = value.step if value.step is not None else 1
        if any(isinstance(v, float) for v in (value.start, value.stop, step)):
            # range() excludes stop; the last value is the last full step below it
            n = int((value.stop - value.start) / step - 1e-9)
            return FloatDistribution(value.start, value.start + n * step, step=step)
        last = value.start + ((value.stop - 1 - value.start) // step) * step
        return IntDistribution(int(value.start), int(last), step=int(step))
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise DigitlabError(
        f"{override.input_line} is not a sweep Optuna can sample: "
        "use choice(...), range(...), interval(...) or tag(log, interval(...))"
    )


def search_space(params: Mapping[str, Any] | None, arguments: Iterable[str]) -> tuple[dict, dict]:
    """``(distributions, fixed)`` from ``hydra.sweeper.params`` and the command-line overrides.

    A key given both ways takes the command line's value, as the Hydra plugin did.
    """
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    distributions: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element()
        value = distribution(override)
        distributions.pop(key, None)
        fixed.pop(key, None)
        (fixed if isinstance(value, str) else distributions)[key] = value
    return distributions, fixed

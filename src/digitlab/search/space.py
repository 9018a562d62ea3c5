"""Hydra's sweep syntax as Optuna distributions: ``interval``, ``choice``, ``range``, ``tag(log)``.

The mapping follows hydra-optuna-sweeper 1.3 (MIT), rewritten for Optuna >= 4, whose
``FloatDistribution`` / ``IntDistribution`` replace the removed ``UniformDistribution``,
``LogUniformDistribution``, ``IntUniformDistribution`` and ``DiscreteUniformDistribution``.
Imports Optuna: the sweeper plugin imports this module only once a sweep starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from digitlab.errors import DigitlabError


def distribution(override: Override) -> Any:
    """The Optuna distribution a sweep override describes, or the fixed value (a string).

    - ``choice(a, b, ...)`` and ``shuffle(range(...))``: categorical;
    - ``range(start, stop[, step])``: int (or float) with that step, ``stop`` excluded;
    - ``interval(low, high)``: float, or int when both bounds are ints; ``tag(log, ...)`` samples
      it on a log scale.
    """
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        # encode keeps a choice that is a number, bool or string, and writes any other as text
        choices = [
            c
            for c in override.sweep_iterator(transformer=Transformer.encode)
            if isinstance(c, str | int | float | bool)
        ]
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        assert start is not None and stop is not None  # the parser sets both of range(...)
        if any(isinstance(v, float) for v in (start, stop, step)):
            # range() excludes stop; the last value is the last full step below it
            n = int((stop - start) / step - 1e-9)
            return FloatDistribution(start, start + n * step, step=step)
        last = start + ((stop - 1 - start) // step) * step
        return IntDistribution(int(start), int(last), step=int(step))
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        assert low is not None and high is not None  # the parser sets both of interval(...)
        log = "log" in value.tags
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
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

"""Pictures of a run: the callback that logs them to MLflow and the plots it draws (``plots``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from digitlab.figures.callback import FigureLogger, drawn_layers, figure_callbacks, grey_levels

__all__ = ["FigureLogger", "drawn_layers", "figure_callbacks", "grey_levels"]


def __getattr__(name: str) -> Any:
    # lazy: the callback imports torch and Lightning (5 s on two busy cores), which a sweep's
    # or repeat's summary drawing with digitlab.figures.plots.sweep, training nothing, never pays.
    if name in __all__:
        from digitlab.figures import callback

        return getattr(callback, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Tables a run logs as text: shared by a sweep's summary and its repeats' statistics."""

from __future__ import annotations

from typing import Any


def markdown_table(frame) -> str:
    """A pipe table of a DataFrame, floats to 4 places (pandas' to_markdown needs tabulate)."""

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return ""
        return f"{value:.4f}" if isinstance(value, float) else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines) + "\n"

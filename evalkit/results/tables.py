"""Text tables and number formats: how every command shows a table and a score.

One owner so that `evalkit run`, `tasks`, `compare`, `check`, `diff`, `report` and `bench` align
columns alike and agree on what a number means. Scores are stored on their natural 0..1 scale;
`compare`, `check` and `report` show *points* (x 100), the scale the paper and its readers use,
while `evalkit run` shows the stored values themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

POINTS = 100.0  # display scale of compare/check/report: stored 0..1 values x 100


def to_points(value: float | None) -> float | None:
    """A stored value in points; None for a missing or NaN value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value) * POINTS


def ci_points(ci: Sequence[float | None] | None) -> tuple[float, float] | None:
    """A stored 95% CI in points; None when it is missing or has an open end."""
    if not ci or None in ci:
        return None
    return (ci[0] * POINTS, ci[1] * POINTS)  # type: ignore[operator]


def format_points(points: float | None) -> str:
    """A value already in points, as the tables print it."""
    return "-" if points is None else f"{points:.2f}"


def format_score(value: float | None) -> str:
    """A per-sample score in points as short as it is exact (100, 0, 60, 33.3)."""
    points = to_points(value)
    return "-" if points is None else f"{points:.1f}".rstrip("0").rstrip(".")


def format_fraction(value: float | None) -> str:
    """A per-sample score on its stored scale (diff's scores)."""
    return "-" if value is None else f"{value:.3f}"


def format_value(value: float | None) -> str:
    """A stored value as `evalkit run` prints it: 4 decimals, 2 from 10 up (CIDEr can pass 1)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def text_table(rows: Sequence[Sequence[str]], numbers_right: bool = False) -> str:
    """Aligned plain-text columns, the header (first row) underlined.

    Left-aligned lines lose their trailing padding; `numbers_right` right-aligns every column but
    the first (bench's figures) and keeps each line at full width.
    """
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    if numbers_right:
        lines = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))) for r in rows]
    else:
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(frame: pd.DataFrame) -> str:
    """GitHub markdown without `tabulate` (pandas' to_markdown needs it; it is not a dependency)."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    header = [cell(c) for c in frame.columns]
    rows = [[cell(v) for v in r] for r in frame.itertuples(index=False)]
    widths = [max([len(h), 3, *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(lines)


def metrics_table(run_data: dict[str, Any]) -> str:
    """The table `evalkit run` prints at the end: every metric of every result, stored scale."""
    rows = [("task", "metric", "value", "95% CI", "n", "errors")]
    for key, t in run_data.get("tasks", {}).items():
        if t.get("submission"):
            rows.append((key, "submission", t["submission"], "", str(t.get("n_samples", "")), str(t.get("n_errors", 0))))
            continue
        for name, m in t.get("metrics", {}).items():
            ci = m.get("ci95")
            ci_text = f"[{format_value(ci[0])}, {format_value(ci[1])}]" if ci else ""
            rows.append((key, name, format_value(m.get("value")), ci_text, str(m.get("n", "")), str(t.get("n_errors", 0))))
    return text_table(rows)

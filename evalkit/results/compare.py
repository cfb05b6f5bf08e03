"""`evalkit compare`: runs side by side, tasks x runs, with deltas and significance vs a baseline.

Numbers are shown in *points*: the stored value x 100. evalkit stores every metric on its
natural 0..1 scale (accuracies, ANLS, CIDEr as pycocoevalcap returns it), while the paper and
everyone reading a table think in percent / CIDEr x 100; one fixed scale keeps run columns and
the paper column comparable and makes `check --max-drop 0.5` mean half a percentage point.

A delta is only meaningful on the same samples under the same settings, so every pairing is
checked (dataset fingerprint, sample ids, spec and prompt hashes, run settings) and any
mismatch is a numbered note in the table, never silently compared. Where two runs scored
different sample sets, corpus metrics are recomputed on the shared ones and the table says so;
significance is tested as `evalkit.results.significance` says.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from evalkit.resources import repo_path
from evalkit.results.runs import Run, RunError, unique_labels
from evalkit.results.significance import ScoreBook, Significance, shared_note, significance_of
from evalkit.results.tables import POINTS, ci_points, format_points, markdown_table, to_points

# Row order and headings of the paper's tables; a task belongs to the first family among its groups.
FAMILIES: tuple[tuple[str, str], ...] = (
    ("captioning", "Captioning"),
    ("vqa", "General VQA"),
    ("textvqa", "Text VQA"),
    ("grounding", "Grounding"),
)
OTHER_FAMILY = "Other"

REPO_PAPER = repo_path("results/paper.json")  # the checkout's, or the copy inside an installed wheel
# Run settings that change what a number means; `seed` only matters where shots are sampled.
COMPARED_SETTINGS = ("prompt_style", "limit")


def family_of(entry: dict[str, Any]) -> str:
    groups = entry.get("groups") or []
    for group, heading in FAMILIES:
        if group in groups:
            return heading
    return OTHER_FAMILY


def family_rank(heading: str) -> int:
    headings = [h for _, h in FAMILIES] + [OTHER_FAMILY]
    return headings.index(heading)


def mismatches(book: ScoreBook, base: Run, other: Run, key: str) -> list[str]:
    """Why `other`'s result for `key` is not like-for-like with `base`'s (empty when it is)."""
    ea, eb = base.tasks.get(key, {}), other.tasks.get(key, {})
    notes: list[str] = []
    who = f"{key}: {other.label} vs {base.label}:"
    if ea.get("dataset_fingerprint") != eb.get("dataset_fingerprint"):
        pa, pb = book.predictions(base, key), book.predictions(other, key)
        if pa is not None and pb is not None:
            shared = len(pa.keys() & pb.keys())
            notes.append(f"{who} different sample sets ({shared} shared of {len(pa)} / {len(pb)}; "
                         "the delta compares different data, the test uses shared samples only)")
        else:
            notes.append(f"{who} different sample sets (dataset fingerprint "
                         f"{ea.get('dataset_fingerprint')} vs {eb.get('dataset_fingerprint')})")
    if ea.get("spec_hash") != eb.get("spec_hash"):
        notes.append(f"{who} different task spec (spec hash {ea.get('spec_hash')} vs {eb.get('spec_hash')})")
    if ea.get("prompt_hash") != eb.get("prompt_hash"):
        notes.append(f"{who} different prompt (prompt hash {ea.get('prompt_hash')} vs {eb.get('prompt_hash')})")
    sa, sb = base.data.get("settings", {}), other.data.get("settings", {})
    names = COMPARED_SETTINGS + (("seed",) if ea.get("shots") or eb.get("shots") else ())
    for name in names:  # run-level: the same note for every task, so it is numbered once
        if sa.get(name) != sb.get(name):
            notes.append(f"{other.label} vs {base.label}: different setting {name} ({sa.get(name)!r} vs {sb.get(name)!r})")
    return notes


# ---------------------------------------------------------------- the comparison table


@dataclass
class Cell:
    value: float | None = None  # points
    ci: tuple[float, float] | None = None  # points
    delta: float | None = None  # points, vs the baseline
    significance: Significance | None = None
    notes: list[int] = field(default_factory=list)  # footnote numbers


@dataclass
class Row:
    key: str
    family: str
    metric: str
    cells: dict[str, Cell]
    paper: dict[str, float | None] = field(default_factory=dict)


@dataclass
class Table:
    """Tasks x runs. Build with `build_table`; render with `render`."""

    labels: list[str]
    rows: list[Row]
    notes: list[str]
    baseline: str | None = None
    alpha: float = 0.05
    paper_columns: list[str] = field(default_factory=list)

    def numeric_frame(self) -> pd.DataFrame:
        """Machine-readable: one column per quantity (values, CI bounds, deltas, p-values)."""
        records = []
        for row in self.rows:
            rec: dict[str, Any] = {"group": row.family, "task": row.key, "metric": row.metric}
            for label in self.labels:
                c = row.cells[label]
                rec[label] = c.value
                rec[f"{label} ci_low"], rec[f"{label} ci_high"] = c.ci or (None, None)
                if self.baseline is not None and label != self.baseline:
                    rec[f"{label} delta"] = c.delta
                    rec[f"{label} p"] = c.significance.p if c.significance else None
                rec[f"{label} notes"] = " ".join(f"[{n}]" for n in c.notes)
            rec.update(row.paper)
            records.append(rec)
        return pd.DataFrame.from_records(records)

    def display_frame(self) -> pd.DataFrame:
        """Human-readable strings: `78.80 [77.1, 80.4] +0.40* [1]`, group shown on its first row only."""
        records = []
        previous = None
        for row in self.rows:
            rec = {"group": row.family if row.family != previous else "", "task": row.key, "metric": row.metric}
            previous = row.family
            for label in self.labels:
                rec[label] = self._cell_text(row.cells[label], label)
            for col in self.paper_columns:
                v = row.paper.get(col)
                rec[col] = format_points(v)
            records.append(rec)
        return pd.DataFrame.from_records(records, columns=["group", "task", "metric", *self.labels, *self.paper_columns])

    def _cell_text(self, c: Cell, label: str) -> str:
        if c.value is None:
            text = "-"
        else:
            text = format_points(c.value)
            if c.ci:
                text += f" [{c.ci[0]:.1f}, {c.ci[1]:.1f}]"
            if c.delta is not None and label != self.baseline:
                mark = "*" if c.significance and c.significance.below(self.alpha) else ""
                text += f" {c.delta:+.2f}{mark}"
        if c.notes:
            text += " " + "".join(f"[{n}]" for n in c.notes)
        return text

    def legend(self) -> list[str]:
        lines = ["values in points (stored metric x 100) with 95% bootstrap CIs"]
        if self.baseline is not None:
            lines.append(
                f"deltas vs {self.baseline}; * p < {self.alpha:g} (paired test on shared samples: McNemar for 0/1 "
                "scores, paired bootstrap otherwise; a z-test on the CIs where per-sample scores are missing)")
        return lines

    def frame(self) -> TableFrame:
        """`numeric_frame` that also renders as this table (what `evalkit.results.compare` returns)."""
        frame = TableFrame(self.numeric_frame())
        frame.table = self
        return frame

    def render(self, fmt: str = "md") -> str:
        if fmt == "csv":
            return self.numeric_frame().to_csv(index=False, float_format="%.6g")
        frame = self.display_frame()
        notes = [f"[{i}] {text}" for i, text in enumerate(self.notes, 1)]
        if fmt == "md":
            return markdown_table(frame) + "\n\n" + "\n".join(f"- {line}" for line in self.legend() + notes) + "\n"
        if fmt == "html":
            from html import escape

            items = "".join(f"<li>{escape(line)}</li>" for line in self.legend() + notes)
            return frame.to_html(index=False, escape=True, border=0, classes="evalkit-compare") + f"\n<ul>{items}</ul>\n"
        if fmt == "latex":
            body = frame.to_latex(index=False, escape=True)
            tail = "".join(f"\\par\\footnotesize {latex_escape(line)}\n" for line in self.legend() + notes)
            return body + tail
        raise ValueError(f"unknown format {fmt!r} (md, csv, html, latex)")


class TableFrame(pd.DataFrame):
    """A comparison as numbers (one column per value, CI bound, delta, p-value, in points) that also
    renders as `evalkit compare` prints it. Frames derived from it (a selection, a sort) are plain
    DataFrames: `render` always shows the whole comparison it came from."""

    _metadata = ["table"]
    table: Table

    @property
    def _constructor(self):
        return pd.DataFrame

    def render(self, fmt: str = "md") -> str:
        """The table as text: "md" (markdown with the legend and notes), "csv", "html" or "latex"."""
        return self.table.render(fmt)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def latex_escape(text: str) -> str:
    return text.translate(str.maketrans(_LATEX))


def select_keys(runs: list[Run], wanted: list[str] | None) -> list[str]:
    """Result keys of all runs, in paper order (family, then first appearance); `wanted` filters by
    result key, task name or group name."""
    seen: dict[str, dict[str, Any]] = {}
    for run in runs:
        for key, entry in run.tasks.items():
            seen.setdefault(key, entry)
    names = {k: {k, e.get("task"), *(e.get("groups") or [])} for k, e in seen.items()}
    keys = [k for k in seen if not wanted or names[k] & set(wanted)]
    unknown = [w for w in wanted or [] if not any(w in n for n in names.values())]
    if unknown:
        raise RunError(f"no results for {', '.join(unknown)} in these runs (they have: {', '.join(seen)})")
    order = {k: i for i, k in enumerate(seen)}
    return sorted(keys, key=lambda k: (family_rank(family_of(seen[k])), order[k]))


def build_table(runs: list[Run], baseline: Run | None = None, tasks: list[str] | None = None,
                paper: dict[str, Any] | None = None, alpha: float = 0.05, all_metrics: bool = False) -> Table:
    """The comparison of `runs` (the baseline, if given and not among them, becomes the first column).

    Mismatches are always checked against a reference run: the baseline, else the first run.
    """
    if baseline is not None and all(r is not baseline for r in runs):
        runs = [baseline, *runs]
    labels = unique_labels(runs)
    label_of = {id(r): lab for r, lab in zip(runs, labels)}
    reference = baseline or runs[0]
    book = ScoreBook()
    notes: list[str] = []
    rows: list[Row] = []
    paper_cols = paper_columns(paper) if paper else {}
    for key in select_keys(runs, tasks):
        entry = next(r.tasks[key] for r in runs if key in r.tasks)
        names = list(entry.get("metrics", {})) if all_metrics else [entry.get("primary_metric") or next(iter(entry.get("metrics", {})), "")]
        for metric in names:
            cells = {label_of[id(r)]: _cell(book, r, reference, baseline, key, metric, notes) for r in runs}
            rows.append(Row(key, family_of(entry), metric or "-", cells,
                            {col: vals.get(key) for col, vals in paper_cols.items()}))
    used = [c for c in paper_cols if any(row.paper.get(c) is not None for row in rows)]
    for row in rows:
        row.paper = {c: row.paper[c] for c in used}
    return Table(labels, rows, notes, label_of[id(baseline)] if baseline else None, alpha, used)


def _cell(book: ScoreBook, run: Run, reference: Run, baseline: Run | None, key: str, metric: str,
          notes: list[str]) -> Cell:
    entry = run.tasks.get(key)
    if entry is None:
        return Cell()
    if entry.get("submission"):
        return Cell(notes=[_note(notes, f"{key}: {run.label}: private answers; submission file {entry['submission']}")])
    m = entry.get("metrics", {}).get(metric, {})
    cell = Cell(to_points(m.get("value")), ci_points(m.get("ci95")))
    if entry.get("n_errors"):
        cell.notes.append(_note(notes, f"{key}: {run.label}: {entry['n_errors']} of {entry.get('n_samples')} samples failed"))
    if run is not reference and key in reference.tasks:
        cell.notes += [_note(notes, text) for text in mismatches(book, reference, run, key)]
    if baseline is not None and run is not baseline and key in baseline.tasks and cell.value is not None:
        base_value = to_points(baseline.tasks[key].get("metrics", {}).get(metric, {}).get("value"))
        if base_value is not None:
            cell.delta = cell.value - base_value
            rescored = book.shared(baseline, run, key, metric)
            if rescored is not None:
                cell.delta = (rescored.other - rescored.base) * POINTS
                cell.notes.append(_note(notes, shared_note(key, metric, run.label, baseline.label, rescored)))
            cell.significance = significance_of(book, baseline, run, key, metric)
    return cell


def _note(notes: list[str], text: str) -> int:
    if text not in notes:
        notes.append(text)
    return notes.index(text) + 1


def paper_columns(paper: dict[str, Any]) -> dict[str, dict[str, float]]:
    """paper.json's models as columns keyed by result key: "Qwen-VL 4-shot" folds into the
    "Qwen-VL (paper)" column under `<task>_4shot`."""
    import re

    columns: dict[str, dict[str, float]] = {}
    for name, values in paper.get("models", {}).items():
        m = re.fullmatch(r"(.*?) (\d+)-shot", name)
        base, suffix = (m.group(1), f"_{m.group(2)}shot") if m else (name, "")
        columns.setdefault(f"{base} (paper)", {}).update({f"{task}{suffix}": v for task, v in values.items()})
    return columns


def load_paper(path: str | Path | None) -> dict[str, Any]:
    file = Path(path) if path else REPO_PAPER
    if not file.exists():
        raise RunError(f"no paper numbers at {file}; pass --paper FILE")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunError(f"{file} is not valid JSON: {exc}") from exc


# ---------------------------------------------------------------- CLI


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or run.json files)")
    p.add_argument("--baseline", metavar="RUN", help="show deltas and significance against this run")
    p.add_argument("--format", choices=["md", "csv", "html", "latex"], default="md", help="output format (default md)")
    p.add_argument("--tasks", default=None, help="comma-separated result keys, task names or groups to show")
    p.add_argument("--paper", nargs="?", const="", default=None, metavar="FILE",
                   help=f"add Qwen-VL's published numbers as columns (default file {REPO_PAPER})")
    p.add_argument("--significance", type=float, default=0.05, metavar="ALPHA",
                   help="p-value below which a delta is marked * (default 0.05)")
    p.add_argument("--output", "-o", default=None, help="write the table to this file instead of stdout")


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare runs in one table: tasks x runs, primary metric with its 95-percent CI, deltas and significance vs --baseline.

    Values are points (stored 0..1 metric x 100). Runs that evaluated different samples, task
    specs, prompts or settings are flagged with numbered notes under the table.
    """
    from evalkit.api import compare

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    paper = False if args.paper is None else args.paper or True  # --paper alone: the shipped paper.json
    text = compare(args.runs, args.baseline, tasks=tasks, paper=paper, alpha=args.significance).render(args.format)
    if args.output:
        from evalkit.results.runs import atomic_write_text

        atomic_write_text(args.output, text)
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0

"""`evalkit compare` (runs side by side, with deltas and significance) and `evalkit diff` (sample by sample).

Numbers are shown in *points*: the stored value x 100. evalkit stores every metric on its
natural 0..1 scale (accuracies, ANLS, CIDEr as pycocoevalcap returns it), while the paper and
everyone reading a table think in percent / CIDEr x 100; one fixed scale keeps run columns and
the paper column comparable and makes `check --max-drop 0.5` mean half a percentage point.

Corpus metrics (CIDEr, BLEU, METEOR, ROUGE-L) depend on the whole set scored (CIDEr's document
frequencies, BLEU's corpus n-gram totals), so where two runs scored different sample sets they
are recomputed on the samples both runs share, on both sides, before the delta, the paired test,
`diff` and `check` (`ScoreBook.shared`); the table says so in a note.

A delta is only meaningful on the same samples under the same settings, so every pairing is
checked (dataset fingerprint, sample ids, spec and prompt hashes, run settings) and any
mismatch is a numbered note in the table, never silently compared. Significance comes from a
paired test on the per-sample scores of shared samples (`evalkit.metrics.stats.paired_test`:
McNemar for 0/1 scores, paired bootstrap otherwise); where one side has no per-sample scores
(a committed bare run.json), from a z-test on the two 95% CIs.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from evalkit.resources import repo_path
from evalkit.results.runs import Run, RunError, load_run
from evalkit.task import Prediction

POINTS = 100.0  # display scale: stored 0..1 values x 100 (see module docstring)

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


def to_points(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value) * POINTS


# ---------------------------------------------------------------- runs and their per-sample scores


@dataclass
class BareRun(Run):
    """A run.json copied on its own (a committed baseline): aggregates only, no samples beside it."""

    source: Path = field(default_factory=Path)

    @property
    def label(self) -> str:
        return self.data.get("label") or self.source.stem

    def samples(self, key: str) -> list[Prediction]:
        raise RunError(f"{self.source} is a bare run.json: it has no per-sample scores")


def open_run(path: str | Path) -> Run:
    """`load_run`, except that a JSON file not named run.json never picks up a samples/ folder that
    happens to sit beside it (baselines/a.json and baselines/b.json share a folder)."""
    path = Path(path)
    run = load_run(path)
    if path.is_file() and path.name != "run.json":
        return BareRun(path=run.path, data=run.data, source=path)
    return run


CORPUS_METRICS = frozenset({"CIDEr", "BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L"})


@dataclass
class SharedScores:
    """A corpus metric of two runs recomputed on the samples both scored (stored 0..1 scale)."""

    n: int
    base: float
    other: float
    base_scores: dict[str, float]  # per-sample, where the metric has them (CIDEr, ROUGE_L)
    other_scores: dict[str, float]


class ScoreBook:
    """Per-sample predictions of runs, read once per (run, result key) however many metrics ask."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, str], dict[str, Prediction] | None] = {}
        self._rescored: dict[tuple[int, str, tuple[str, ...]], Any] = {}

    def shared(self, base: Run, other: Run, key: str, metric: str) -> SharedScores | None:
        """`metric` recomputed on the shared samples when it is a corpus metric and the two runs
        scored different sample sets; None when the stored values are already comparable."""
        if metric not in CORPUS_METRICS:
            return None
        pa, pb = self.predictions(base, key), self.predictions(other, key)
        if not pa or not pb or pa.keys() == pb.keys():
            return None
        ids = tuple(sorted(i for i in pa.keys() & pb.keys() if pa[i].references and pb[i].references))
        if not ids:
            return None
        ra, rb = self._rescore(base, key, ids), self._rescore(other, key, ids)
        return SharedScores(len(ids), ra.aggregate[metric], rb.aggregate[metric],
                            ra.per_image.get(metric, {}), rb.per_image.get(metric, {}))

    def _rescore(self, run: Run, key: str, ids: tuple[str, ...]) -> Any:
        slot = (id(run), key, ids)
        if slot not in self._rescored:
            from evalkit.metrics.caption import evaluate_captions
            from evalkit.metrics.exact import reference_list

            preds = self.predictions(run, key) or {}
            answers = {i: (preds[i].answer if isinstance(preds[i].answer, str) else preds[i].output) or "" for i in ids}
            self._rescored[slot] = evaluate_captions(answers, {i: reference_list(preds[i].references) for i in ids})
        return self._rescored[slot]

    def predictions(self, run: Run, key: str) -> dict[str, Prediction] | None:
        slot = (id(run), key)
        if slot not in self._cache:
            try:
                self._cache[slot] = {p.sample_id: p for p in run.samples(key)}
            except RunError:
                self._cache[slot] = None
        return self._cache[slot]

    def scores(self, run: Run, key: str, metric: str) -> dict[str, float] | None:
        preds = self.predictions(run, key)
        if not preds:
            return None
        out = {sid: float(p.scores[metric]) for sid, p in preds.items() if metric in p.scores}
        return out or None


@dataclass
class Significance:
    """The outcome of testing one metric of one task between two runs."""

    p: float | None  # None: not testable (no per-sample scores and no CIs)
    method: str  # "paired" | "ci" | "none"
    n_shared: int = 0  # samples the paired test used

    def below(self, alpha: float) -> bool:
        return self.p is not None and self.p < alpha


def ci_z_test(a: dict[str, Any], b: dict[str, Any]) -> Significance:
    """Two-sided z-test from two 95% CIs (SE = width / 3.92), treating the runs as independent.

    Used only where per-sample scores are missing. Ignoring the positive correlation of two
    models on the same samples makes it conservative: it flags fewer drops than a paired test.
    """
    ca, cb = a.get("ci95"), b.get("ci95")
    if not ca or not cb or None in (*ca, *cb, a.get("value"), b.get("value")):
        return Significance(None, "none")
    se = math.hypot((ca[1] - ca[0]) / 3.92, (cb[1] - cb[0]) / 3.92)
    diff = b["value"] - a["value"]
    if se == 0:
        return Significance(1.0 if diff == 0 else 0.0, "ci")
    return Significance(math.erfc(abs(diff) / se / math.sqrt(2)), "ci")


def significance_of(book: ScoreBook, base: Run, other: Run, key: str, metric: str) -> Significance:
    """Paired test on shared samples where both runs have per-sample scores, else the CI z-test.
    A corpus metric on different sample sets is tested on its values recomputed on the shared ones."""
    rescored = book.shared(base, other, key, metric)
    if rescored is not None:
        a, b = rescored.base_scores, rescored.other_scores
        if not a and not b:  # BLEU / METEOR: no per-sample scores; equal recomputed values differ by nothing
            same = rescored.base == rescored.other
            return Significance(1.0 if same else None, "shared" if same else "none", rescored.n)
    else:
        a, b = book.scores(base, key, metric), book.scores(other, key, metric)
    if a and b:
        shared = sorted(a.keys() & b.keys())
        if len(shared) >= 2:
            from evalkit.metrics.stats import paired_test

            p = paired_test([a[i] for i in shared], [b[i] for i in shared])
            return Significance(float(p), "paired", len(shared))
    ma = base.tasks.get(key, {}).get("metrics", {}).get(metric, {})
    mb = other.tasks.get(key, {}).get("metrics", {}).get(metric, {})
    return ci_z_test(ma, mb)


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
                rec[col] = "-" if v is None else f"{v:.2f}"
            records.append(rec)
        return pd.DataFrame.from_records(records, columns=["group", "task", "metric", *self.labels, *self.paper_columns])

    def _cell_text(self, c: Cell, label: str) -> str:
        if c.value is None:
            text = "-"
        else:
            text = f"{c.value:.2f}"
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


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def text_table(rows: list[tuple[str, ...]]) -> str:
    """Aligned plain-text columns, header underlined (the style of `evalkit run`'s summary)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def latex_escape(text: str) -> str:
    return text.translate(str.maketrans(_LATEX))


def unique_labels(runs: list[Run]) -> list[str]:
    labels = [r.label for r in runs]
    if len(set(labels)) == len(labels):
        return labels
    return [str(getattr(r, "source", r.path)) for r in runs]


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
    ci = m.get("ci95")
    cell = Cell(to_points(m.get("value")), (ci[0] * POINTS, ci[1] * POINTS) if ci and None not in ci else None)
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


def shared_note(key: str, metric: str, label: str, base_label: str, s: SharedScores) -> str:
    return (f"{key}: {metric} recomputed on the {s.n} samples {label} and {base_label} share, for the delta and "
            f"the test ({s.other * POINTS:.2f} vs {s.base * POINTS:.2f}): a corpus metric depends on the set scored")


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


# ---------------------------------------------------------------- sample-level diff


@dataclass
class SampleDiff:
    sample_id: str
    score_a: float | None
    score_b: float | None
    a: Prediction
    b: Prediction

    @property
    def delta(self) -> float:
        return (self.score_b or 0.0) - (self.score_a or 0.0)


@dataclass
class Diff:
    key: str
    metric: str
    n_shared: int
    disagreements: list[SampleDiff]  # most different first
    only_a: list[str]
    only_b: list[str]
    recomputed: bool = False  # a corpus metric's per-sample scores recomputed on the shared samples


def resolve_key(run: Run, task: str) -> str:
    """A result key as given, or the only result of a task name (`okvqa_val` for `okvqa_val_4shot` alone)."""
    if task in run.tasks:
        return task
    keys = [k for k, e in run.tasks.items() if e.get("task") == task]
    if len(keys) == 1:
        return keys[0]
    if keys:
        raise RunError(f"{run.label} has several results for {task}: {', '.join(keys)}; name one")
    raise RunError(f"{run.label} has no results for {task} (it has: {', '.join(run.tasks) or 'none'})")


def diff_runs(run_a: Run, run_b: Run, task: str, metric: str | None = None) -> Diff:
    """Shared samples whose score or output differ, largest |score delta| first, then by output change."""
    key = resolve_key(run_a, task)
    if key not in run_b.tasks:
        raise RunError(f"{run_b.label} has no results for {key}")
    metric = metric or run_a.tasks[key].get("primary_metric") or ""
    book = ScoreBook()
    pa, pb = book.predictions(run_a, key), book.predictions(run_b, key)
    if pa is None or pb is None:
        missing = run_a if pa is None else run_b
        raise RunError(f"{missing.label}: no per-sample predictions for {key} (samples/{key}.jsonl)")
    shared = [sid for sid in pa if sid in pb]
    rescored = book.shared(run_a, run_b, key, metric)  # per-sample CIDEr of different sets: recomputed
    rows = []
    for sid in shared:
        a, b = pa[sid], pb[sid]
        if rescored is not None:
            d = SampleDiff(sid, rescored.base_scores.get(sid), rescored.other_scores.get(sid), a, b)
        else:
            d = SampleDiff(sid, a.scores.get(metric), b.scores.get(metric), a, b)
        if d.score_a != d.score_b or a.output != b.output or a.error != b.error:
            rows.append(d)
    rows.sort(key=lambda d: (-abs(d.delta), d.a.output == d.b.output))
    return Diff(key, metric, len(shared), rows,
                [s for s in pa if s not in pb], [s for s in pb if s not in pa], rescored is not None)


def format_diff(diff: Diff, label_a: str, label_b: str, limit: int | None) -> str:
    better = sum(1 for d in diff.disagreements if d.delta > 0)
    worse = sum(1 for d in diff.disagreements if d.delta < 0)
    lines = [f"{diff.key} ({diff.metric}): {diff.n_shared} shared samples, {len(diff.disagreements)} differ "
             f"({label_b} better on {better}, worse on {worse}, same score on {len(diff.disagreements) - better - worse})"]
    if diff.only_a or diff.only_b:
        lines.append(f"not compared: {len(diff.only_a)} samples only in {label_a}, {len(diff.only_b)} only in {label_b}")
    if diff.recomputed:
        lines.append(f"{diff.metric} recomputed on the shared samples for both runs (it depends on the set scored)")
    shown = diff.disagreements[:limit] if limit is not None else diff.disagreements
    for i, d in enumerate(shown, 1):
        lines += [
            "",
            f"#{i} sample {d.sample_id}  {_score(d.score_a)} -> {_score(d.score_b)}  (delta {d.delta:+.3f})",
            f"  prompt: {_one_line(d.a.prompt or d.b.prompt)}",
            f"  {label_a}: {_output(d.a)}",
            f"  {label_b}: {_output(d.b)}",
            f"  references: {_one_line(json.dumps(d.a.references if d.a.references is not None else d.b.references, ensure_ascii=False))}",
        ]
    if len(shown) < len(diff.disagreements):
        lines.append(f"\n... {len(diff.disagreements) - len(shown)} more (raise --limit)")
    return "\n".join(lines)


def _score(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _output(p: Prediction) -> str:
    text = json.dumps(p.output, ensure_ascii=False)
    return f"{text}  [error: {p.error}]" if p.error else text


def _one_line(text: str, width: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


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


def run_file(run: str | Path | Run) -> Path:
    """The run.json a path or a loaded run stands for, resolved: the same run however it is spelled."""
    if isinstance(run, BareRun):
        return run.source.resolve()
    if isinstance(run, Run):
        return (run.path / "run.json").resolve()
    p = Path(run).resolve()
    return p / "run.json" if p.is_dir() else p


def add_diff_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument("--task", required=True, help="result key (e.g. okvqa_val_4shot) or task name")
    p.add_argument("--metric", default=None, help="per-sample score to compare (default: the task's primary metric)")
    p.add_argument("--limit", type=int, default=20, help="show at most N samples (default 20)")


def cmd_diff(args: argparse.Namespace) -> int:
    """Show the samples where two runs disagree, most different first: scores, outputs side by side, references."""
    run_a, run_b = open_run(args.run_a), open_run(args.run_b)
    a, b = unique_labels([run_a, run_b])
    print(format_diff(diff_runs(run_a, run_b, args.task, args.metric), a, b, args.limit))
    return 0

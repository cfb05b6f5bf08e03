"""`evalkit diff`: two runs sample by sample, the samples where they disagree most first.

A corpus metric's per-sample scores (CIDEr) depend on the set scored, so where the runs scored
different sample sets they are recomputed on the shared samples first (`ScoreBook.shared`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from evalkit.results.runs import Run, RunError, open_run, resolve_key, unique_labels
from evalkit.results.significance import ScoreBook
from evalkit.results.tables import format_fraction
from evalkit.task import Prediction


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
            f"#{i} sample {d.sample_id}  {format_fraction(d.score_a)} -> {format_fraction(d.score_b)}  (delta {d.delta:+.3f})",
            f"  prompt: {_one_line(d.a.prompt or d.b.prompt)}",
            f"  {label_a}: {_output(d.a)}",
            f"  {label_b}: {_output(d.b)}",
            f"  references: {_one_line(json.dumps(d.a.references if d.a.references is not None else d.b.references, ensure_ascii=False))}",
        ]
    if len(shown) < len(diff.disagreements):
        lines.append(f"\n... {len(diff.disagreements) - len(shown)} more (raise --limit)")
    return "\n".join(lines)


def _output(p: Prediction) -> str:
    text = json.dumps(p.output, ensure_ascii=False)
    return f"{text}  [error: {p.error}]" if p.error else text


def _one_line(text: str, width: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


# ---------------------------------------------------------------- CLI


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

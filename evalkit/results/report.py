"""`evalkit report`: one self-contained HTML page per run, for reading a run sample by sample.

The page is a single file (CSS inline, images as small base64 JPEG thumbnails, charts as inline
SVG) so it can be attached to a CI job or mailed without a folder beside it. Scores alone hide
*why* a model fails; the page shows per task the worst samples and a seeded random sample with
outputs and references, boxes drawn on the image for grounding tasks, and score-vs-shots curves.

The samples, scores and boxes shown come from the run folder (the grounding metric stores the
boxes it compared with each prediction). Only the pixels are not in it: `SampleSource` re-loads
the dataset with the run's own data_dir for the thumbnails (and the fields the prompt showed);
when the data is not available the page still renders, without thumbnails, and says why.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from evalkit.results.compare import family_of, select_keys
from evalkit.results.runs import Run, RunError, atomic_write_text, open_run
from evalkit.results.tables import ci_points, format_points, format_score, to_points
from evalkit.task import ImageError, Prediction, Sample, TaskSpec

THUMB_SIDE = 360  # px, longest side of an embedded thumbnail


@dataclass
class Box:
    kind: str  # "gt" | "pred"
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class SampleView:
    sample_id: str
    score: float | None
    question: str
    output: str
    references: str
    error: str | None = None
    image: str | None = None  # data: URI of the thumbnail
    width: int = 0  # original pixel size: the SVG viewBox, so boxes need no rescaling
    height: int = 0
    boxes: list[Box] = field(default_factory=list)


@dataclass
class MetricRow:
    family: str
    key: str
    metric: str
    value: float | None
    ci: tuple[float, float] | None
    n: int | None
    errors: int
    primary: bool


@dataclass
class TaskView:
    key: str
    metric: str
    value: float | None
    n_samples: int
    worst: list[SampleView]
    random: list[SampleView]
    grounding: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class Curve:
    task: str
    metric: str
    svg: Markup


# ---------------------------------------------------------------- building the page's content


def metric_rows(run: Run) -> list[MetricRow]:
    rows = []
    for key in select_keys([run], None):
        entry = run.tasks[key]
        for name, m in entry.get("metrics", {}).items():
            rows.append(MetricRow(family_of(entry), key, name, to_points(m.get("value")), ci_points(m.get("ci95")),
                                  m.get("n"), entry.get("n_errors", 0), name == entry.get("primary_metric")))
        if entry.get("submission"):
            rows.append(MetricRow(family_of(entry), key, "submission", None, None, entry.get("n_samples"),
                                  entry.get("n_errors", 0), True))
    return rows


class SampleSource:
    """The task's samples re-loaded from its dataset (for their images), or why they could not be."""

    def __init__(self, run: Run, data_dir: str | None, tasks_dir: list[str]):
        self.data_dir = data_dir if data_dir is not None else run.data.get("settings", {}).get("data_dir")
        self.tasks_dir = tasks_dir
        self._registry: Any = None
        self._cache: dict[str, tuple[dict[str, Sample], str | None]] = {}
        self.specs: dict[str, TaskSpec] = {}

    def get(self, entry: dict[str, Any]) -> tuple[dict[str, Sample], str | None]:
        task = entry.get("task", "")
        if task not in self._cache:
            self._cache[task] = self._load(entry)
        return self._cache[task]

    def _load(self, entry: dict[str, Any]) -> tuple[dict[str, Sample], str | None]:
        from evalkit.data import load_samples
        from evalkit.data.ids import unique_ids
        from evalkit.registry import Registry

        task = entry.get("task", "")
        try:  # any failure here only costs the thumbnails, so it is reported, not raised
            if self._registry is None:
                self._registry = Registry(extra_dirs=self.tasks_dir)
            spec = self._registry.get(task)
            self.specs[task] = spec
            samples = load_samples(spec, self.data_dir)
        except Exception as exc:
            return {}, f"images not shown: the data of {task} is not available here ({exc})"
        note = None
        if entry.get("spec_hash") and spec.spec_hash() != entry["spec_hash"]:
            note = f"the spec of {task} changed since this run; images are matched by sample id"
        return dict(zip(unique_ids(samples), samples)), note


def thumbnail(sample: Sample) -> tuple[str, int, int] | None:
    """(data URI, original width, original height) of the sample's first image, or None."""
    if not sample.images:
        return None
    try:
        image = sample.images[0].load()
    except ImageError:
        return None
    width, height = image.size
    image = image.copy()
    image.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), width, height


def pixel_box(value: Any) -> list[float] | None:
    """A box [x1, y1, x2, y2] in pixels (or the first of a list of them); None when `value` is none."""
    ref = value
    if isinstance(ref, list) and ref and isinstance(ref[0], list | tuple):
        ref = ref[0]
    if isinstance(ref, list | tuple) and len(ref) == 4 and all(isinstance(v, int | float) for v in ref):
        return [float(v) for v in ref]
    return None


GROUNDING_METRICS = {"grounding_accuracy"}


def is_grounding(entry: dict[str, Any], spec: TaskSpec | None = None) -> bool:
    """A task is grounding when it is scored by a grounding metric (in its result or its spec), whatever
    its groups and whether or not its outputs echo `<box>` (a prompt ending in `<box>` makes them not)."""
    names = {entry.get("primary_metric"), *(entry.get("metrics") or {})}
    if spec is not None:
        names |= {m.name for m in spec.metrics}
    return bool(names & GROUNDING_METRICS)


def scored_boxes(pred: Prediction, width: int, height: int, parser: str = "qwen") -> list[Box]:
    """The gold and predicted boxes the grounding metric compared, as it stored them with the prediction.

    A run folder scored before the metric stored them has its output parsed again here, with the
    parser the run recorded in its info (Qwen-VL's by default), as the metric parsed it then."""
    meta = pred.metadata or {}
    if "box" in meta:
        gold, box = meta.get("gt_box"), meta["box"]
    else:
        from evalkit.metrics.grounding import PARSERS, parse_box

        gold = pred.references
        box = PARSERS.get(parser, parse_box)(pred.output or "", width, height) if width and height else None
    return [Box(kind, *b) for kind, b in (("gt", pixel_box(gold)), ("pred", pixel_box(box))) if b]


def references_text(references: Any) -> str:
    """VQA's ten answers read better counted ("red x8, maroon x2") than listed."""
    if isinstance(references, list) and references and all(isinstance(r, str) for r in references):
        counts = Counter(references)
        return ", ".join(f"{a} ×{n}" if n > 1 else a for a, n in counts.most_common())
    if references is None:
        return "-"
    return json.dumps(references, ensure_ascii=False)


def prompt_fields(spec: TaskSpec | None, style: str) -> set[str] | None:
    """The sample fields the task's prompt shows the model (None when the spec is unknown)."""
    import string

    if spec is None:
        return None
    template = spec.prompts.get(style) or next(iter(spec.prompts.values()), "")
    return {name for _, name, _, _ in string.Formatter().parse(template) if name and name != "image"}


def question_text(pred: Prediction, sample: Sample | None, shown: set[str] | None = None) -> str:
    """The model's input: the fields its prompt uses (never the answer fields a spec may also carry,
    e.g. the few-shot answer text), or the prompt itself without image spans."""
    if sample is not None and sample.fields and shown is not None:
        return "\n".join(f"{k}: {v}" for k, v in sample.fields.items()
                         if k in shown and isinstance(v, str | int | float))
    return re.sub(r"<img>.*?</img>|<image>", "", pred.prompt or "").strip()


def sample_view(pred: Prediction, metric: str, sample: Sample | None, grounding: bool, parser: str = "qwen",
                shown: set[str] | None = None) -> SampleView:
    view = SampleView(pred.sample_id, pred.scores.get(metric), question_text(pred, sample, shown), pred.output,
                      references_text(pred.references), pred.error)
    thumb = thumbnail(sample) if sample is not None else None
    if thumb is not None:
        view.image, view.width, view.height = thumb
    if grounding:
        meta = {**(sample.metadata if sample else {}), **(pred.metadata or {})}  # the size the boxes are in
        view.width = int(meta.get("width") or view.width)
        view.height = int(meta.get("height") or view.height)
        view.boxes = scored_boxes(pred, view.width, view.height, parser)
    return view


def task_view(run: Run, key: str, source: SampleSource, n: int, seed: int) -> TaskView:
    entry = run.tasks[key]
    metric = entry.get("primary_metric") or ""
    view = TaskView(key, metric, to_points(entry.get("metrics", {}).get(metric, {}).get("value")),
                    entry.get("n_samples", 0), [], [])
    try:
        preds = run.samples(key)
    except RunError as exc:  # a bare run.json: the table is all there is
        view.notes.append(f"no per-sample predictions ({exc})")
        return view
    samples, note = source.get(entry)
    spec = source.specs.get(entry.get("task", ""))
    view.grounding = is_grounding(entry, spec)
    shown = prompt_fields(spec, run.data.get("settings", {}).get("prompt_style") or "base")
    if note:
        view.notes.append(note)
    order = sorted(range(len(preds)), key=lambda i: (_score_or(preds[i], metric), i))
    worst = [preds[i] for i in order[:n]]
    # a task no bigger than the sample size is shown whole (as "worst"), not twice
    picked = [] if len(preds) <= n else sorted(random.Random(f"{seed}:{key}").sample(range(len(preds)), n))
    info = entry.get("info", {}).get(metric)
    parser = info.get("parser", "qwen") if isinstance(info, dict) else "qwen"
    view.worst = [sample_view(p, metric, samples.get(p.sample_id), view.grounding, parser, shown) for p in worst]
    view.random = [sample_view(preds[i], metric, samples.get(preds[i].sample_id), view.grounding, parser, shown)
                   for i in picked]
    return view


def _score_or(pred: Prediction, metric: str) -> float:
    """Errors first, then the lowest scores."""
    return -1.0 if pred.error else float(pred.scores.get(metric, 0.0))


def fewshot_curves(run: Run) -> list[Curve]:
    by_task: dict[str, list[dict[str, Any]]] = {}
    for entry in run.tasks.values():
        if entry.get("metrics"):
            by_task.setdefault(entry.get("task", ""), []).append(entry)
    curves = []
    for task, entries in by_task.items():
        if len({e.get("shots", 0) for e in entries}) < 2:
            continue
        metric = entries[0].get("primary_metric") or ""
        points = []
        for e in sorted(entries, key=lambda e: e.get("shots", 0)):
            m = e["metrics"].get(metric, {})
            value = to_points(m.get("value"))
            if value is not None:
                points.append((e.get("shots", 0), value, ci_points(m.get("ci95"))))
        if len(points) >= 2:
            curves.append(Curve(task, metric, Markup(curve_svg(points, metric))))
    return curves


def curve_svg(points: list[tuple[int, float, tuple[float, float] | None]], y_label: str,
              width: int = 380, height: int = 230) -> str:
    """Score vs shots as a small inline SVG line chart with CI whiskers (no plotting dependency)."""
    left, right, top, bottom = 52, 16, 14, 40
    xs = [p[0] for p in points]
    lows = [p[2][0] if p[2] else p[1] for p in points]
    highs = [p[2][1] if p[2] else p[1] for p in points]
    y0, y1 = min(lows), max(highs)
    pad = max((y1 - y0) * 0.15, 0.5)
    y0, y1 = (y0 - pad if y0 < 0 else max(y0 - pad, 0.0)), y1 + pad  # points are >= 0: no axis below 0
    x0, x1 = min(xs), max(xs)

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" class="curve">']
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.1f}</text>')
    for x in xs:
        parts.append(f'<text x="{sx(x):.1f}" y="{height - bottom + 16}" text-anchor="middle">{x}</text>')
    parts.append(f'<text x="{(left + width - right) / 2:.1f}" y="{height - 6}" text-anchor="middle" class="axis">shots</text>')
    parts.append(f'<text transform="translate(12,{(top + height - bottom) / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle" class="axis">{_xml(y_label)}</text>')
    for x, _, ci in points:
        if ci:
            parts.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{sy(ci[0]):.1f}" y2="{sy(ci[1]):.1f}" class="ci"/>')
    path = " ".join(f"{sx(x):.1f},{sy(v):.1f}" for x, v, _ in points)
    parts.append(f'<polyline points="{path}" class="line"/>')
    for x, v, _ in points:
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(v):.1f}" r="4" class="dot"><title>{x}-shot: {v:.2f}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_context(run: Run, n_samples: int = 6, seed: int = 0, data_dir: str | None = None,
                  tasks_dir: list[str] | None = None) -> dict[str, Any]:
    source = SampleSource(run, data_dir, tasks_dir or [])
    keys = [k for k in select_keys([run], None) if not run.tasks[k].get("submission")]
    data = run.data
    return {
        "title": f"evalkit report: {run.label}",
        "label": run.label,
        "model": data.get("model", {}),
        "created": data.get("created", ""),
        "version": data.get("evalkit_version", ""),
        "settings": {k: v for k, v in data.get("settings", {}).items() if k in ("limit", "seed", "prompt_style", "shots", "data_dir")},
        "seconds": data.get("timing", {}).get("total_seconds"),
        "metrics": metric_rows(run),
        "curves": fewshot_curves(run),
        "tasks": [task_view(run, k, source, n_samples, seed) for k in keys],
        "n_samples": n_samples,
        "seed": seed,
    }


def render(context: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["pts"] = format_points
    env.filters["score"] = format_score
    return env.get_template("report.html.j2").render(**context)


def write_report(run: Run, output: str | Path, **options: Any) -> Path:
    output = Path(output)
    atomic_write_text(output, render(build_context(run, **options)))
    return output


# ---------------------------------------------------------------- CLI


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("--output", "-o", default=None, help="HTML file to write (default RUN/report.html)")
    p.add_argument("--samples", type=int, default=6, metavar="N", help="worst and random samples shown per task (default 6)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random sample (default 0)")
    p.add_argument("--data-dir", default=None, help="where the datasets live, for thumbnails (default: the run's)")
    p.add_argument("--tasks-dir", action="append", default=[], metavar="DIR", help="an extra directory of task specs")
    p.add_argument("--verbose", action="store_true", help="show the libraries' own output (datasets' preparation lines)")
    p.add_argument("--allow-download", action="store_true",
                   help="fetch hub datasets that are not cached, for thumbnails (default: local data only)")


def cmd_report(args: argparse.Namespace) -> int:
    """Write a self-contained HTML report of a run: metrics, worst and random samples, boxes, few-shot curves."""
    if not args.allow_download:  # a report reads what is local (data_dir or the hub cache); it never downloads
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from evalkit import quiet

    run = open_run(args.run)
    quiet.configure(args.verbose)
    output = Path(args.output) if args.output else run.path / "report.html"
    write_report(run, output, n_samples=args.samples, seed=args.seed, data_dir=args.data_dir, tasks_dir=args.tasks_dir)
    print(f"report: {output}")
    return 0

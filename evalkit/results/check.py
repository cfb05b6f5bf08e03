"""`evalkit check`: the CI regression gate.

A metric regresses when it drops by more than `--max-drop` points AND the drop is significant
at `--significance`. Both conditions, because a gate on the raw drop flaps on noise (a 50-sample
smoke suite moves by whole points between harmless changes), and a gate on significance alone
fails a 214k-sample VQAv2 run for a 0.1-point wobble nobody cares about.

- Points are the stored 0..1 metric x 100, the scale `evalkit compare` prints: `--max-drop 0.5`
  is half a percentage point of accuracy, 0.5 CIDEr points (121.4 -> 120.9). Every metric here
  is higher-is-better.
- Significance: a paired test on the per-sample scores of shared samples where both sides are run
  folders (McNemar for 0/1 scores, paired bootstrap otherwise); where the baseline is a bare
  run.json (committed to the repo without samples), a z-test on the two 95% CIs; where neither
  exists (a corpus metric without a CI), the drop alone decides: the gate fails closed.
- Missing data fails: a task or metric the baseline has and the run lacks (or scored as null) is
  a failure unless `--allow-missing`. Different sample sets or prompts are printed as warnings.

Exit codes: 0 pass, 1 regression or missing data, 2 unusable input (via RunError in the CLI).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from evalkit.argtypes import at_least
from evalkit.results.compare import mismatches
from evalkit.results.runs import Run, RunError, atomic_write_json, open_run
from evalkit.results.significance import ScoreBook, Significance, shared_note, significance_of
from evalkit.results.tables import format_points, text_table, to_points


@dataclass
class Finding:
    """One (task, metric) of the baseline, checked."""

    key: str
    metric: str
    baseline: float | None  # points
    value: float | None  # points
    significance: Significance | None = None
    status: str = "ok"  # ok | regressed | missing
    reason: str = ""

    @property
    def drop(self) -> float | None:
        if self.baseline is None or self.value is None:
            return None
        return self.baseline - self.value


@dataclass
class CheckResult:
    findings: list[Finding]
    warnings: list[str] = field(default_factory=list)
    allow_missing: bool = False

    @property
    def regressed(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "regressed"]

    @property
    def missing(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "missing"]

    @property
    def failed(self) -> bool:
        return bool(self.regressed) or (bool(self.missing) and not self.allow_missing)


def check_run(run: Run, baseline: Run, max_drop: float = 0.5, alpha: float = 0.05,
              allow_missing: bool = False) -> CheckResult:
    book = ScoreBook()
    result = CheckResult([], allow_missing=allow_missing)
    for key, base_entry in baseline.tasks.items():
        if base_entry.get("submission"):
            continue  # private answers: nothing was scored
        entry = run.tasks.get(key)
        if entry is not None:
            result.warnings += mismatches(book, baseline, run, key)
        for metric, m in base_entry.get("metrics", {}).items():
            base_value = to_points(m.get("value"))
            if base_value is None:
                result.warnings.append(f"{key}: {metric}: the baseline has no value; not checked")
                continue
            value = to_points(entry.get("metrics", {}).get(metric, {}).get("value")) if entry else None
            rescored = book.shared(baseline, run, key, metric) if entry and value is not None else None
            if rescored is not None:  # different sample sets: a corpus metric compared on the shared ones
                base_value, value = to_points(rescored.base), to_points(rescored.other)
                result.warnings.append(shared_note(key, metric, run.label, baseline.label, rescored))
            f = Finding(key, metric, base_value, value)
            result.findings.append(f)
            if value is None:
                f.status = "missing"
                f.reason = "task not in run" if entry is None else "metric not in run" if metric not in entry.get("metrics", {}) else "no value"
                continue
            if f.drop is None or f.drop <= max_drop:
                f.reason = "" if f.drop is None or f.drop <= 0 else "within --max-drop"
                continue
            f.significance = significance_of(book, baseline, run, key, metric)
            if f.significance.p is None:
                f.status, f.reason = "regressed", "no per-sample scores or CIs: drop alone decides"
            elif alpha >= 1 or f.significance.below(alpha):  # alpha 1: the drop alone decides, even at p = 1
                f.status = "regressed"
            else:
                f.reason = "drop not significant"
    if not result.findings:
        raise RunError(f"baseline {baseline.label} has no metric values to check against")
    extra = [k for k in run.tasks if k not in baseline.tasks]
    if extra:
        result.warnings.append(f"not in the baseline, so not gated: {', '.join(extra)}")
    return result


def format_result(result: CheckResult, verbose: bool = False) -> str:
    shown = [f for f in result.findings if verbose or f.status != "ok" or f.significance is not None]
    rows = [("task", "metric", "baseline", "run", "change", "p (test)", "status")]
    for f in shown:
        sig = f.significance
        p = "-" if sig is None or sig.p is None else f"{sig.p:.3g} ({sig.method}{f', n={sig.n_shared}' if sig.n_shared else ''})"
        change = "-" if f.drop is None else f"{f.value - f.baseline:+.2f}"
        status = f.status if not (f.status == "missing" and result.allow_missing) else "missing (allowed)"
        rows.append((f.key, f.metric, format_points(f.baseline), format_points(f.value), change, p,
                     f"{status}: {f.reason}" if f.reason else status))
    lines = [text_table(rows)] if len(rows) > 1 else []
    lines += [f"warning: {w}" for w in dict.fromkeys(result.warnings)]
    n = len(result.findings)
    if result.failed:
        lines.append(f"FAIL: {len(result.regressed)} regressed, {len(result.missing)} missing, of {n} metrics checked")
    else:
        extra = f" ({len(result.missing)} missing, allowed)" if result.missing else ""
        lines.append(f"PASS: {n} metrics checked, none regressed{extra}")
    return "\n".join(lines)


def write_baseline(run: Run, path: str | Path) -> Path:
    """The run's run.json, written atomically where the baseline lives (a file, to be committed)."""
    path = Path(path)
    if path.is_dir():
        raise RunError(f"--update-baseline writes a JSON file; {path} is a folder (use e.g. {path / 'run.json'} "
                       "or results/baselines/<name>.json)")
    atomic_write_json(path, run.data)
    return path


def add_check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="the run folder (or run.json) to gate")
    p.add_argument("--baseline", required=True, metavar="FILE_OR_RUN",
                   help="a committed baseline .json (a copy of a run.json) or a run folder")
    p.add_argument("--max-drop", type=_non_negative, default=0.5, metavar="POINTS",
                   help="allowed drop in points: stored 0..1 metric x 100, e.g. percentage points of accuracy (default 0.5)")
    p.add_argument("--significance", type=float, default=0.05, metavar="ALPHA",
                   help="a drop counts only if its p-value is below ALPHA (default 0.05; 1 gates on the drop alone)")
    p.add_argument("--allow-missing", action="store_true",
                   help="tasks or metrics of the baseline that the run lacks are reported, not failures")
    p.add_argument("--update-baseline", action="store_true", help="write the baseline file from this run and exit 0")
    p.add_argument("--verbose", "-v", action="store_true", help="list every checked metric, not only failures")


_non_negative = at_least(float, 0, "a number", "must be >= 0")


def cmd_check(args: argparse.Namespace) -> int:
    """Regression gate: exit 1 when a metric drops by more than --max-drop points and the drop is significant.

    Points are the stored 0..1 metric x 100 (percentage points for accuracies). Significance is a
    paired test on shared samples where both sides have per-sample scores, else a z-test on the
    95% CIs (bare run.json baselines). A baseline task or metric the run lacks fails unless
    --allow-missing. Exit 0 pass, 1 fail, 2 unusable input.
    """
    run = open_run(args.run)
    if args.update_baseline:
        path = write_baseline(run, args.baseline)
        print(f"baseline written: {path} ({len(run.tasks)} results from {run.label})")
        return 0
    if not Path(args.baseline).exists():
        raise RunError(f"baseline {args.baseline} not found; create it with --update-baseline")
    baseline = open_run(args.baseline)
    print(f"evalkit check: {run.label} vs baseline {baseline.label} "
          f"(max drop {args.max_drop:g} points, significance {args.significance:g})")
    result = check_run(run, baseline, args.max_drop, args.significance, args.allow_missing)
    print(format_result(result, args.verbose))
    return 1 if result.failed else 0

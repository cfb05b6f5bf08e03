"""The Python API: what the `evalkit` command does, as functions that return pandas DataFrames.

Thin, stable wrappers over the code the CLI runs (`evalkit run` calls `evaluate`, `evalkit tasks`
calls `list_tasks`, `evalkit compare` calls `compare`), so a notebook gets the same numbers as
the command line:

    import evalkit
    run = evalkit.evaluate(model="demo", tasks=["demo_vqa"], output="runs/api")
    run.metrics                          # one row per task and metric
    run.samples("demo_vqa")              # one row per sample
    evalkit.compare([run], baseline="results/baselines/demo.json").render("md")

Nothing heavy is imported until a function is called.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from evalkit.distributed import Dist
    from evalkit.results import runs as results
    from evalkit.results.compare import TableFrame
    from evalkit.task import Prediction, TaskSpec

# The embedded default: what `evalkit run` does with no arguments (the bundled demo model on the
# demo suite: real Qwen-VL code, real tasks and metrics, under half a minute on a 2-core CPU).
DEFAULT_MODEL = "demo"
DEFAULT_TASKS = "demo"


@dataclass(frozen=True)
class Run:
    """A finished run folder (or a bare run.json, e.g. a committed baseline), read as DataFrames.

    Metric values are on their stored scale (accuracies 0..1, CIDEr as pycocoevalcap returns it);
    `compare` shows points (x 100). `data` is run.json as loaded.
    """

    raw: results.Run
    requested: tuple[str, ...] = ()  # the result keys the `evaluate` call that made it asked for

    @property
    def path(self) -> Path:
        return self.raw.path

    @property
    def data(self) -> dict[str, Any]:
        return self.raw.data

    @property
    def label(self) -> str:
        return self.raw.label

    @property
    def tasks(self) -> list[str]:
        """Result keys: the task name, or `<task>_<k>shot` for a k-shot result."""
        return list(self.raw.tasks)

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per result and metric: task, shots, metric, value, ci_low, ci_high, n, n_errors, primary."""
        import pandas as pd

        rows = []
        for key, entry in self.raw.tasks.items():
            for name, m in entry.get("metrics", {}).items():
                low, high = m.get("ci95") or (None, None)
                rows.append({"task": key, "shots": entry.get("shots", 0), "metric": name, "value": m.get("value"),
                             "ci_low": low, "ci_high": high, "n": m.get("n"), "n_errors": entry.get("n_errors", 0),
                             "primary": name == entry.get("primary_metric")})
        columns = ["task", "shots", "metric", "value", "ci_low", "ci_high", "n", "n_errors", "primary"]
        return pd.DataFrame.from_records(rows, columns=columns)

    def predictions(self, task: str) -> list[Prediction]:
        """The per-sample records of a result key or task name, as `Prediction` objects."""
        from evalkit.results.runs import resolve_key

        return self.raw.samples(resolve_key(self.raw, task))

    def samples(self, task: str) -> pd.DataFrame:
        """One row per sample of a result key or task name: sample_id, prompt, output, answer,
        references, error, metadata, then one column per per-sample score (e.g. vqa_accuracy)."""
        import pandas as pd

        fields = ["sample_id", "prompt", "output", "answer", "references", "error", "metadata"]
        preds = self.predictions(task)
        rows = [{**{f: getattr(p, f) for f in fields}, **p.scores} for p in preds]
        score_names = list(dict.fromkeys(name for p in preds for name in p.scores))
        return pd.DataFrame.from_records(rows, columns=fields + score_names)

    def table(self) -> str:
        """The plain-text metrics table `evalkit run` prints."""
        from evalkit.results.tables import metrics_table

        return metrics_table(self.data)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, tasks={self.tasks})"


def evaluate(model: str = DEFAULT_MODEL, tasks: str | Sequence[str] = DEFAULT_TASKS, output: str | Path | None = None,
             *, shots: Sequence[int] = (0,), limit: int | None = None, seed: int = 0, batch_size: int | str = "auto",
             dtype: str | None = None, device: str | None = None, prompt_style: str | None = None,
             data_dir: str | Path | None = None, max_errors: int | None = None,
             tasks_dir: Sequence[str | Path] = (), progress: bool | None = None, dist: Dist | None = None) -> Run | None:
    """Run `tasks` (names or groups) on `model` (`demo`, `qwen-vl:PATH`, `replay:FILE`) and return the run.

    The settings are `evalkit run`'s flags. `output` defaults to `runs/<model>`; running again with
    the same output resumes. `progress` defaults to bars when stderr is a terminal. Under torchrun
    only rank 0 returns the run (the other ranks return None).
    """
    from evalkit.distributed import Dist
    from evalkit.models import lazy_model
    from evalkit.registry import Registry
    from evalkit.resources import PACKAGE
    from evalkit.results.runs import check_writable, result_key
    from evalkit.runner import Runner, RunSettings

    if not (batch_size == "auto" or (isinstance(batch_size, int) and batch_size >= 1)):
        raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    if not shots or any(not isinstance(k, int) or k < 0 for k in shots):
        raise ValueError(f"shots must be non-negative integers, got {shots!r}")
    out = Path(output) if output is not None else default_output(model)
    check_writable(out, "--output")
    own_dist = dist is None
    dist = Dist.from_env().init() if own_dist else dist
    try:
        device = dist.rank_device(device)
        check_device(device)
        specs = Registry(extra_dirs=tasks_dir).select(tasks)
        if dist.is_main:
            warn_demo_model(model, specs)
        options = {"batch_size": batch_size, "dtype": dtype, "device": device}
        loaded = lazy_model(model.replace("{evalkit}", str(PACKAGE)),
                            **{k: v for k, v in options.items() if v is not None})
        settings = RunSettings(
            output=out, shots=list(shots), limit=limit, seed=seed,
            batch_size=batch_size if isinstance(batch_size, int) else None,  # auto: the model's call_size
            prompt_style=prompt_style, data_dir=None if data_dir is None else str(data_dir), max_errors=max_errors,
            model_spec=model, progress=sys.stderr.isatty() if progress is None else progress,
        )
        data = Runner(loaded, settings, dist).run(specs)
    finally:
        if own_dist:
            dist.close()
    if data is None:  # not rank 0
        return None
    from evalkit.results.runs import Run as RawRun

    return Run(RawRun(path=out, data=data), tuple(result_key(s.name, k) for s in specs for k in shots))


def check_device(device: str | None) -> None:
    """`--device cuda` on a machine (or a torch build) without CUDA: one line, before any model load."""
    from evalkit.models.base import ModelError

    if device is None or device == "cpu":
        return
    import torch

    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ModelError("--device mps: this machine (or this torch build) has no MPS; use --device cpu")
        return
    if not torch.cuda.is_available():
        why = (f"this torch ({torch.__version__}) is built without CUDA" if torch.version.cuda is None
               else "no CUDA GPU is visible")
        raise ModelError(f"--device {device}: {why}; use --device cpu (or leave --device out)")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ModelError(f"--device {device}: there are {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")


def warn_demo_model(model_spec: str, specs: list) -> None:
    """The demo model knows only the synthetic demo suite; on a real benchmark its scores mean nothing."""
    if model_spec.partition(":")[0] != "demo":
        return
    other = [s.name for s in specs if "demo" not in s.groups]
    if other:
        print(f"evalkit: warning: the demo model (a tiny model trained on the synthetic demo suite) is run on "
              f"{', '.join(other[:4])}{' ...' if len(other) > 4 else ''}: its scores there mean nothing; "
              "pass --model qwen-vl:PATH for a real model", file=sys.stderr)


def default_output(model: str) -> Path:
    """`runs/<model>`, the model spec made a folder name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model.replace("{evalkit}", "")).strip("_")[-80:] or "run"
    return Path("runs") / slug


def load_run(path: str | Path) -> Run:
    """A run folder, its run.json, or a bare run.json such as a committed baseline."""
    from evalkit.results.runs import open_run

    return Run(open_run(path))


def compare(runs: Sequence[Run | results.Run | str | Path], baseline: Run | results.Run | str | Path | None = None, *, tasks: Sequence[str] | None = None,
            paper: bool | str | Path = False, alpha: float = 0.05, all_metrics: bool = False) -> TableFrame:
    """The table of `evalkit compare`: one row per task (and metric), for each run its value in points
    (stored x 100) with CI bounds and, against `baseline`, the delta and its p-value.

    `runs` and `baseline` are Runs or paths; a baseline that is not among the runs becomes the
    first column. `paper=True` adds Qwen-VL's published numbers (a path: another paper file).
    The result is a DataFrame; `.render("md" | "csv" | "html" | "latex")` gives the text
    `evalkit compare --format` prints, with the notes on mismatched runs.
    """
    from evalkit.results.compare import build_table, load_paper
    from evalkit.results.runs import run_file

    opened = [_raw(r) for r in runs]
    if not opened:
        raise ValueError("compare needs at least one run")
    base = None
    if baseline is not None:  # one of the runs (however it was given), else an extra first column
        wanted = run_file(baseline.raw if isinstance(baseline, Run) else baseline)
        base = next((r for r in opened if run_file(r) == wanted), None) or _raw(baseline)
    paper_data = (load_paper(None if paper is True else paper)) if paper is not False else None
    table = build_table(opened, base, list(tasks) if tasks else None, paper_data, alpha, all_metrics)
    return table.frame()


def _raw(run: Run | results.Run | str | Path) -> results.Run:
    from evalkit.results.runs import Run as RawRun
    from evalkit.results.runs import open_run

    if isinstance(run, Run):
        return run.raw
    if isinstance(run, RawRun):
        return run
    return open_run(run)


def list_tasks(tasks_dir: Sequence[str | Path] = ()) -> pd.DataFrame:
    """The task registry (plus any `tasks_dir`), one row per task, by name: task, groups (a list),
    dataset, split, metric, output, and the published numbers of Qwen-VL (`paper`) and Qwen-VL-Chat
    (`paper_chat`) from results/paper.json, where the paper reports the task (in any data route)."""
    import pandas as pd

    from evalkit.registry import Registry
    from evalkit.results.compare import load_paper

    reg = Registry(extra_dirs=tasks_dir)
    names = sorted(reg.tasks)
    models = load_paper(None).get("models", {})
    rows = []
    for name in names:
        spec = reg.tasks[name]
        same = re.sub(r"_(files|tsv)$", "", name)  # another data route of the same benchmark
        rows.append({"task": name, "groups": list(spec.groups), "dataset": dataset_label(spec),
                     "split": spec.dataset.split,
                     "metric": ",".join(m.name for m in spec.metrics) or ("submission" if spec.submission else ""),
                     "output": spec.output_type, "paper": models.get("Qwen-VL", {}).get(same),
                     "paper_chat": models.get("Qwen-VL-Chat", {}).get(same)})
    columns = ["task", "groups", "dataset", "split", "metric", "output", "paper", "paper_chat"]
    return pd.DataFrame.from_records(rows, columns=columns)


def dataset_label(spec: TaskSpec) -> str:
    """Where a task's data comes from, short: a hub repo id, the evaluated split's file, or the format."""
    files = spec.dataset.data_files
    if isinstance(files, dict):  # one file per split: show the evaluated one
        files = files.get(spec.dataset.split, next(iter(files.values()), ""))
    text = files if isinstance(files, str) else str(files) if files else ""
    return str(spec.dataset.path or text.replace("{evalkit}/", "evalkit/") or spec.dataset.format)


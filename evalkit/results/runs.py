"""The run folder: its files, their schema, and how they are written so a crash never corrupts them.

A run folder holds `run.json` (what ran, on what, and the aggregate scores), `manifest.json`
(the identity a resumed run must match) and `samples/<key>.jsonl` (one Prediction per line),
which doubles as the cache: lines are appended and fsynced as predictions complete, a torn
last line from a kill is detected and dropped, and the final file is rewritten atomically in
dataset order with the per-sample scores.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit import __version__
from evalkit.errors import EvalkitError
from evalkit.task import Prediction

SCHEMA = "evalkit.run/1"
# A lone surrogate (legal in a JSON string escape, so a replayed or decoded output can hold one) has
# no UTF-8 form; written as its `\udXXX` escape it stays valid JSON that loads back to the same string.
JSON_ESCAPE = "backslashreplace"


class RunError(EvalkitError, RuntimeError):
    """A run folder that is missing, corrupt, or belongs to a different model or settings."""


def check_writable(folder: str | Path, flag: str = "--output", shown: str | Path | None = None) -> None:
    """Fail at once, naming the path, when files cannot be written in `folder` (or where it would be
    created), instead of after the work with a traceback about temp files. Nothing is left behind.
    `shown` is the path the user gave (a file in `folder`), when that is not the folder itself."""
    folder = Path(folder)
    given = shown if shown is not None else folder
    probe = folder.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise RunError(f"{flag} {given}: {probe} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".evalkit-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        where = "there" if probe == Path(given).absolute() else f"in {probe}"
        raise RunError(f"{flag} {given}: cannot write {where} ({exc.strerror or exc}); "
                       "choose a writable location") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temp file in the same folder + fsync + rename: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make results unreadable to the team
        with os.fdopen(fd, "w", encoding="utf-8", errors=JSON_ESCAPE) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set straight back
    os.umask(mask)
    return mask


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, dumps(data, indent=2) + "\n")


def dumps(data: Any, indent: int | None = None) -> str:
    """Deterministic JSON (sorted keys, NaN as null) so identical results are identical bytes."""
    return json.dumps(_clean(data), indent=indent, sort_keys=True, ensure_ascii=False)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class SampleCache:
    """Append-only predictions of one task, tolerant of a kill at any byte."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dict[str, Prediction]:
        """Every complete, valid line; a torn or corrupt tail is cut off the file so appends stay clean."""
        if not self.path.exists():
            return {}
        raw = self.path.read_bytes()
        out, good_end = self._scan(raw)
        if good_end < len(raw):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
        return out

    def read_finished(self) -> list[Prediction]:
        """A finished run's predictions, in file order; any torn or corrupt line is an error, not a shorter list.

        Unlike `load` (resuming, where a bad tail is recomputed) this never changes the file: a
        compare or report must not quietly score fewer samples than the run has.
        """
        raw = self.path.read_bytes()
        out, good_end = self._scan(raw)
        if good_end < len(raw):
            line = raw[:good_end].count(b"\n") + 1
            raise RunError(f"{self.path}: line {line} is torn or corrupt; re-run the same command to redo it")
        return list(out.values())

    @staticmethod
    def _scan(raw: bytes) -> tuple[dict[str, Prediction], int]:
        """The predictions of the valid lines before the first bad one, and where that bad one starts."""
        out: dict[str, Prediction] = {}
        good_end = 0
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn final line: the write never finished
            pred = _parse_line(line)
            if pred is None:
                break  # corrupt from here on: keep only what precedes it
            out[pred.sample_id] = pred
            good_end += len(line)
        return out, good_end

    def append(self, predictions: Iterable[Prediction]) -> None:
        lines = "".join(dumps(p.to_json()) + "\n" for p in predictions)
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8", errors=JSON_ESCAPE) as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())

    def finalize(self, predictions: list[Prediction]) -> None:
        atomic_write_text(self.path, "".join(dumps(p.to_json()) + "\n" for p in predictions))


def _parse_line(line: bytes) -> Prediction | None:
    """One cache line as a Prediction, or None when it is not one whole record this module wrote."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly deep nesting
        return None
    if not (isinstance(record, dict) and isinstance(record.get("sample_id"), str) and isinstance(record.get("task"), str)):
        return None
    try:
        return Prediction.from_json(record)
    except TypeError:
        return None


def result_key(task: str, shots: int) -> str:
    """The name of a (task, shot count) result: `okvqa_val` for zero-shot, `okvqa_val_4shot` else."""
    return task if shots == 0 else f"{task}_{shots}shot"


@dataclass
class Run:
    """A loaded run folder."""

    path: Path
    data: dict[str, Any]

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        return self.data.get("tasks", {})

    @property
    def label(self) -> str:
        return self.data.get("label") or self.path.name

    def samples(self, key: str) -> list[Prediction]:
        file = self.path / "samples" / f"{key}.jsonl"
        if not file.exists():
            raise RunError(f"{self.path}: no samples file for {key} ({file})")
        return SampleCache(file).read_finished()


def load_run(path: str | Path) -> Run:
    """A run folder or a run.json file (a committed baseline is a bare run.json)."""
    path = Path(path)
    file = path / "run.json" if path.is_dir() else path
    if not file.exists():
        hint = " (the run may not have finished: re-run the same command to resume)" if path.is_dir() else ""
        raise RunError(f"no run found at {path}: {file} does not exist{hint}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise RunError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise RunError(f"{file} is not an evalkit run (schema {SCHEMA!r} expected)")
    return Run(path=file.parent, data=data)


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


def run_file(run: str | Path | Run) -> Path:
    """The run.json a path or a loaded run stands for, resolved: the same run however it is spelled."""
    if isinstance(run, BareRun):
        return run.source.resolve()
    if isinstance(run, Run):
        return (run.path / "run.json").resolve()
    p = Path(run).resolve()
    return p / "run.json" if p.is_dir() else p


def unique_labels(runs: list[Run]) -> list[str]:
    """The runs' labels, or their paths where two labels are the same (a table needs distinct columns)."""
    labels = [r.label for r in runs]
    if len(set(labels)) == len(labels):
        return labels
    return [str(getattr(r, "source", r.path)) for r in runs]


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


def check_manifest(out: Path, mine: dict[str, Any]) -> None:
    """A folder's cache is only valid for the same model, seed, prompt style and specs: refuse
    another, else record `mine` (its tasks added to the folder's)."""
    for stale in [*out.glob(".*.tmp"), *out.glob("samples/.*.tmp")]:
        stale.unlink(missing_ok=True)  # an atomic write cut short by a kill; never read
    path = out / "manifest.json"
    if path.exists():
        old = read_manifest(path)
        for key in ("model", "seed", "prompt_style"):
            if old.get(key) != mine[key]:
                raise RunError(
                    f"{out} holds a run with a different {key} ({old.get(key)!r} vs {mine[key]!r}); "
                    "use another --output folder or delete this one"
                )
        for name, h in mine["tasks"].items():
            if old.get("tasks", {}).get(name, h) != h:
                raise RunError(f"{out}: task {name} spec changed since its cached samples were made; "
                               "use another --output folder or delete samples/ for it")
        mine["tasks"] = {**old.get("tasks", {}), **mine["tasks"]}
    atomic_write_json(path, mine)


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        old = None
    if not isinstance(old, dict):
        raise RunError(f"{path} is corrupt, so what made the cached samples is unknown; "
                       "use another --output folder or delete this one")
    return old


def versions() -> dict[str, str]:
    """What a run's numbers may depend on, recorded in run.json."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"evalkit": __version__, "python": platform.python_version()}
    for pkg in ("torch", "transformers", "datasets", "pycocoevalcap"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out

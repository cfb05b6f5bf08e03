"""Find, validate and select declarative task specs.

Specs are YAML files: the project's `tasks/` directory, any `--tasks-dir` the user adds, and
directories other packages announce through the `evalkit.tasks` entry-point group. A file
may `include:` a base file (relative path) and override parts of it, the way
lm-evaluation-harness specs share a base; files whose name starts with `_` are bases only.
Validation happens on load, so a typo is one error naming the file and the field, not a
crash an hour into a run.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from evalkit.errors import EvalkitError
from evalkit.resources import repo_path
from evalkit.task import DatasetSpec, FewShotSpec, GenerationSettings, MetricSpec, TaskSpec

REPO_TASKS_DIR = repo_path("tasks")  # the checkout's tasks/, or the copy inside an installed wheel
GROUP_SUFFIX = ".group.yaml"  # group files: a named suite of tasks and groups (Registry._add_group)


class SpecError(EvalkitError, ValueError):
    """A task spec that does not validate. The message names the file and the field."""


class UnknownTaskError(EvalkitError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def default_task_dirs() -> list[Path]:
    dirs = [REPO_TASKS_DIR]
    env = os.environ.get("EVALKIT_TASKS_DIRS")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    from importlib.metadata import entry_points

    for ep in entry_points(group="evalkit.tasks"):
        dirs.append(Path(ep.load()()))
    return dirs


class Registry:
    """All task specs visible from a set of directories, by name and by group."""

    def __init__(self, dirs: Iterable[str | Path] | None = None, extra_dirs: Iterable[str | Path] = ()):
        self.dirs = [Path(d) for d in (default_task_dirs() if dirs is None else dirs)]
        self.dirs += [Path(d) for d in extra_dirs]
        self.tasks: dict[str, TaskSpec] = {}
        group_files: list[Path] = []
        for d in self.dirs:
            if not d.is_dir():
                raise SpecError(f"task directory not found: {d}")
            for file in sorted(d.rglob("*.yaml")):
                if file.name.startswith("_"):
                    continue
                if file.name.endswith(GROUP_SUFFIX):
                    group_files.append(file)
                    continue
                spec = load_spec(file)
                if spec.name in self.tasks and self.tasks[spec.name].source != spec.source:
                    raise SpecError(f"{file}: task {spec.name!r} is also defined in {self.tasks[spec.name].source}")
                self.tasks[spec.name] = spec
        for file in group_files:
            self._add_group(file)

    def _add_group(self, file: Path) -> None:
        """A group file (`<name>.group.yaml`: `group: NAME`, `tasks: [task or group names]`) adds its
        group to each member's `groups`, so a suite spanning many families needs no edit of their specs."""
        data = _read_with_includes(file, seen=())
        name, members = data.get("group"), data.get("tasks")
        if not isinstance(name, str) or not isinstance(members, list) or set(data) - {"group", "tasks", "description"}:
            raise SpecError(f"{file}: a group file has 'group' (a name), 'tasks' (a list) and an optional 'description'")
        groups = self.groups
        for member in members:
            names = groups.get(member) or ([member] if member in self.tasks else None)
            if names is None:
                raise SpecError(f"{file}: field 'tasks': {self._unknown(member)}")
            for task in names:
                if name not in self.tasks[task].groups:
                    self.tasks[task].groups.append(name)

    @property
    def groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for name, spec in sorted(self.tasks.items()):
            for g in spec.groups:
                groups.setdefault(g, []).append(name)
        return groups

    def get(self, name: str) -> TaskSpec:
        if name not in self.tasks:
            raise UnknownTaskError(self._unknown(name))
        return self.tasks[name]

    def select(self, names: str | Iterable[str]) -> list[TaskSpec]:
        """Task names and group names (comma-separated or a list), expanded, in order, without repeats."""
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        chosen: dict[str, TaskSpec] = {}
        groups = self.groups
        for name in names:
            if name in self.tasks:
                chosen[name] = self.tasks[name]
            elif name in groups:
                chosen.update({t: self.tasks[t] for t in groups[name]})
            else:
                raise UnknownTaskError(self._unknown(name))
        return list(chosen.values())

    def _unknown(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self.tasks) + list(self.groups), n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `evalkit tasks` lists them"
        return f"unknown task {name!r}{hint}"


# ---------------------------------------------------------------- loading and validation


def load_spec(path: str | Path) -> TaskSpec:
    path = Path(path)
    data = _read_with_includes(path, seen=())
    if "task" not in data:
        raise SpecError(f"{path}: missing required field 'task' (the task name)")
    data["name"] = data.pop("task")
    spec = _build(TaskSpec, data, path, prefix="")
    spec.source = str(path)
    _check_semantics(spec, path)
    return spec


def _read_with_includes(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path in seen:
        raise SpecError(f"{path}: include cycle")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from exc
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from exc
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a task spec must be a mapping, got {type(data).__name__}")
    include = data.pop("include", None)
    if include is None:
        return data
    base = _read_with_includes(path.parent / include, seen + (path,))
    return _deep_merge(base, data)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_NESTED = {
    "dataset": DatasetSpec,
    "generation": GenerationSettings,
    "fewshot": FewShotSpec,
}


def _build(cls: type, data: dict[str, Any], path: Path, prefix: str) -> Any:
    """Construct dataclass `cls` from a mapping, checking names and types field by field."""
    if not isinstance(data, dict):
        raise SpecError(f"{path}: field '{prefix.rstrip('.')}' must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in fields or key == "source":
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise SpecError(f"{path}: unknown field '{where}'{hint}")
        kwargs[key] = _convert(key, value, hints[key], path, where)
    missing = [
        n for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and n not in kwargs
    ]
    if missing:
        raise SpecError(f"{path}: missing required field '{prefix}{missing[0]}'")
    return cls(**kwargs)


def _convert(key: str, value: Any, hint: Any, path: Path, where: str) -> Any:
    if key in _NESTED and value is not None:
        return _build(_NESTED[key], value, path, prefix=f"{where}.")
    if key == "metrics":
        if not isinstance(value, list) or not value:
            raise SpecError(f"{path}: field '{where}' must be a non-empty list of metrics")
        return [_metric(m, path, f"{where}[{i}]") for i, m in enumerate(value)]
    if key == "groups" and isinstance(value, str):
        value = [value]
    if not _type_ok(value, hint):
        raise SpecError(f"{path}: field '{where}' has the wrong type: expected {_type_name(hint)}, got {value!r}")
    return value


def _metric(value: Any, path: Path, where: str) -> MetricSpec:
    if isinstance(value, str):
        return MetricSpec(value)
    if isinstance(value, dict) and "name" in value:
        extra = set(value) - {"name", "options"}
        if extra:
            raise SpecError(f"{path}: unknown field '{where}.{sorted(extra)[0]}' (a metric has name and options)")
        return MetricSpec(value["name"], dict(value.get("options") or {}))
    raise SpecError(f"{path}: field '{where}' must be a metric name or {{name: ..., options: ...}}")


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if origin in (list, dict):
        return isinstance(value, origin)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    return str(hint).replace("typing.", "")


def _check_semantics(spec: TaskSpec, path: Path) -> None:
    """The names a spec picks from its owners' tables (metrics, dataset formats, postprocess
    steps) and the rules between fields; each table is imported from the module that uses it."""
    from evalkit.data.loader import dataset_formats
    from evalkit.metrics import metric_names
    from evalkit.metrics.score import POSTPROCESS_STEPS

    metrics = metric_names()
    for i, m in enumerate(spec.metrics):
        _check_name(m.name, metrics, "metric", path, f"metrics[{i}].name")
    if not spec.prompts:
        raise SpecError(f"{path}: field 'prompts' must define at least one prompt style (base, chat)")
    chat = spec.prompts.get("chat", "")
    if "<|im_start|>" in chat or "<|im_end|>" in chat:
        raise SpecError(f"{path}: field 'prompts.chat' is the user's turn only, e.g. \"{{image}}{{question}} Answer:\": "
                        "the chat template (evalkit/chat.py) adds the system prompt and <|im_start|>/<|im_end|>")
    if "chat_reply" in spec.prompts and not chat:
        raise SpecError(f"{path}: field 'prompts.chat_reply' needs a 'prompts.chat' turn to reply to")
    if spec.output_type == "choice" and "choices" not in spec.fields:
        raise SpecError(f"{path}: field 'fields.choices' is required when output_type is 'choice'")
    if "image" not in spec.fields and "images" not in spec.fields:
        raise SpecError(f"{path}: field 'fields.image' (or 'fields.images') is required")
    formats = dataset_formats()
    _check_name(spec.dataset.format, formats, "dataset format", path, "dataset.format")
    if spec.fewshot is not None and spec.fewshot.dataset is not None:
        _check_name(spec.fewshot.dataset.format, formats, "dataset format", path, "fewshot.dataset.format")
    for i, step in enumerate(spec.postprocess):
        _check_name(step, list(POSTPROCESS_STEPS), "postprocess step", path, f"postprocess[{i}]")


def _check_name(name: Any, known: list[str], what: str, path: Path, where: str) -> None:
    if name in known:
        return
    close = difflib.get_close_matches(name, known, n=1) if isinstance(name, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
    raise SpecError(f"{path}: field '{where}': unknown {what} {name!r}{hint}")

"""`evalkit tasks --show TASK`: every place a task's data is looked for, so a user can lay out a
local copy without reading the code (hub ids under both organisations, original files under
--data-dir, the few-shot source)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalkit.data.loader import _HUB_FORMATS, PACKAGE_DIR, PATH_ALTERNATIVES, expand_path
from evalkit.data.sources import hub_ids, hub_places
from evalkit.task import DatasetSpec, TaskSpec


def _paths(ds: DatasetSpec) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    if ds.path and ds.format not in _HUB_FORMATS:
        items.append(("path", ds.path))
    if ds.data_files is not None:
        items.append(("data_files", ds.data_files))
    items += [(k, v) for k, v in ds.options.items() if k.endswith(("_file", "_dir", "_root", "files"))]
    if ds.image_root:
        items.append(("image_root", ds.image_root))
    return items


def _flat(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flat(v)]
    if isinstance(value, list):
        return [x for v in value for x in _flat(v)]
    return [str(value)]


def _show(value: str, spec_dir: Path | None, data_dir: str | None) -> str:
    if data_dir is None and "{data_dir}" in value:
        return value.replace("{evalkit}", str(PACKAGE_DIR)).replace("{data_dir}", "<--data-dir>")
    return expand_path(value, spec_dir, data_dir)


def _describe(ds: DatasetSpec, spec_dir: Path | None, data_dir: str | None, title: str) -> list[str]:
    lines = [f"{title}: format {ds.format}, split {ds.split}" + (f", config {ds.name}" if ds.name else "")]
    if ds.format in _HUB_FORMATS and ds.path:
        lines.append(f"  hub ids tried: {', '.join(hub_ids(ds.path))}")
        for place in hub_places(ds.path, data_dir):
            mark = "then   " if place.endswith("(online)") else "found  " if Path(place.split(" (")[0]).exists() else "missing"
            lines.append(f"    {mark} {place}")
    for key, value in _paths(ds):
        for raw in _flat(value):
            shown = _show(raw, spec_dir, data_dir)
            places = PATH_ALTERNATIVES[ds.format](shown) if key == "path" and ds.format in PATH_ALTERNATIVES else [shown]
            for i, place in enumerate(places):
                label = key if i == 0 else "  or"
                mark = "found  " if Path(place).exists() else "missing"
                lines.append(f"  {label:<16} {mark} {place}")
    return lines


def describe_task(spec: TaskSpec, data_dir: str | None = None) -> str:
    spec_dir = Path(spec.source).parent if spec.source else None
    lines = [f"{spec.name}  ({spec.source})"]
    lines += _describe(spec.dataset, spec_dir, data_dir, "evaluated")
    fs = spec.fewshot
    if fs is not None and fs.split:
        source = fs.dataset or DatasetSpec(**{**spec.dataset.__dict__, "split": fs.split})
        lines += _describe(source, spec_dir, data_dir, "few-shot")
    if data_dir is None:
        lines.append("(pass --data-dir DIR to see the paths under it)")
    return "\n".join(lines)

"""Load a task's rows and turn them into Samples.

Rows come from an adapter chosen by `DatasetSpec.format`: `hf` (a hub repo, or a local copy
of one), `parquet` / `json` / `jsonl` / `csv` / `arrow` (local files through `datasets`), or an
original-format adapter registered by name (COCO captions json, VQA question/annotation
json, RefCOCO refs...). A row that cannot become a Sample (a missing image, a malformed
field) is kept as a Sample carrying an `error`, so the run records it and goes on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from evalkit.data.fields import row_to_sample
from evalkit.data.sources import hub_ids, locate_hub
from evalkit.errors import EvalkitError
from evalkit.task import DatasetSpec, Sample, TaskSpec

RowAdapter = Callable[[DatasetSpec], Iterable[dict[str, Any]]]
_ADAPTERS: dict[str, RowAdapter] = {}
_HUB_FORMATS = {"hf"}  # formats whose `path` is a hub repo id (a local copy may stand in under --data-dir)
_FILE_FORMATS = {"parquet", "json", "jsonl", "csv", "arrow"}
PATH_ALTERNATIVES: dict[str, Callable[[str], list[str]]] = {}  # format -> every place its `path` is looked for
SOURCE_ROW = "__source_row__"  # set by adapters that drop rows: the row's index in the unfiltered split
PACKAGE_DIR = Path(__file__).resolve().parents[1]


class DatasetError(EvalkitError, RuntimeError):
    """A dataset that cannot be loaded; the message says what is missing and how to get it."""


def register_adapter(name: str, hub: bool = False) -> Callable[[RowAdapter], RowAdapter]:
    """Register a row adapter; `hub=True` when its `path` is a hub repo id, like `hf`."""
    def wrap(fn: RowAdapter) -> RowAdapter:
        _ADAPTERS[name] = fn
        if hub:
            _HUB_FORMATS.add(name)
        return fn

    return wrap


def dataset_formats() -> list[str]:
    """Every `dataset.format` a spec may name: the hub, the file formats `datasets` reads and the
    registered adapters (the registry checks specs against this list)."""
    import evalkit.data  # noqa: F401  (importing the package registers every adapter)

    return sorted({*_HUB_FORMATS, *_FILE_FORMATS, *_ADAPTERS})


def expand_path(value: str, spec_dir: Path | None, data_dir: str | None) -> str:
    """Resolve `{evalkit}`, `{data_dir}` and spec-relative paths in data_files / image roots."""
    if data_dir is None and "{data_dir}" in value:
        data_dir = os.environ.get("EVALKIT_DATA_DIR")
        if data_dir is None:
            raise DatasetError(f"{value!r} needs --data-dir (or EVALKIT_DATA_DIR): where the local copy lives")
    if data_dir is not None:  # relative to where the command runs, not to the spec file
        data_dir = str(Path(data_dir).expanduser().absolute())
    value = value.replace("{evalkit}", str(PACKAGE_DIR)).replace("{data_dir}", str(data_dir))
    path = Path(value).expanduser()
    if not path.is_absolute() and spec_dir is not None and "://" not in value:
        path = spec_dir / path
    return str(path)


def resolve_dataset(spec: TaskSpec, data_dir: str | None = None, split: str | None = None) -> DatasetSpec:
    """The task's DatasetSpec with every local path made absolute.

    The few-shot split may come from another source (`fewshot.dataset`, e.g. original train
    files where the hub only has the test split); asking for that split returns that source.
    """
    ds = spec.dataset
    fs = spec.fewshot
    if split is not None and fs is not None and fs.dataset is not None and split == fs.split:
        ds, split = fs.dataset, fs.dataset.split
    spec_dir = Path(spec.source).parent if spec.source else None

    def fix(v: Any) -> Any:
        if isinstance(v, str):
            return expand_path(v, spec_dir, data_dir)
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    path = ds.path
    hub = ds.format in _HUB_FORMATS
    if path and hub:
        path = locate_hub(path, data_dir).path
    elif path:
        path = fix(path)
    options = {k: fix(v) if k.endswith(("_file", "_dir", "_root", "files")) else v for k, v in ds.options.items()}
    return replace(
        ds,
        path=path,
        split=split or ds.split,
        data_files=fix(ds.data_files) if ds.data_files is not None else None,
        image_root=fix(ds.image_root) if ds.image_root else None,
        options=options,
    )


def dataset_source(spec: TaskSpec, data_dir: str | None = None) -> dict[str, Any] | None:
    """Which copy of a hub dataset a task reads (run.json's `dataset_source`); None for local files."""
    ds = spec.dataset
    if ds.format not in _HUB_FORMATS or not ds.path:
        return None
    return locate_hub(ds.path, data_dir).to_dict()


def load_samples(spec: TaskSpec, data_dir: str | None = None, split: str | None = None) -> list[Sample]:
    """All samples of a task (or of another split of its dataset, for few-shot demonstrations)."""
    ds = resolve_dataset(spec, data_dir, split)
    adapter = _ADAPTERS.get(ds.format)
    if adapter is None:
        if ds.format in _FILE_FORMATS or ds.format == "hf":
            adapter = _hf_rows
        else:
            raise DatasetError(f"task {spec.name}: unknown dataset format {ds.format!r}; known: {sorted(_ADAPTERS)}")
    from evalkit.data.offline import offline_message, offline_when_unreachable

    hub_id = ds.format in _HUB_FORMATS and bool(ds.path) and not Path(str(ds.path)).exists()
    samples = []
    with offline_when_unreachable(hub_id) as offline:
        try:
            for index, row in enumerate(adapter(ds)):
                try:
                    sample = row_to_sample(row, spec.fields, index, ds.image_root)
                    sample.metadata["row"] = int(row.get(SOURCE_ROW, index))
                    samples.append(sample)
                except (KeyError, ValueError, TypeError) as exc:
                    samples.append(Sample(id=str(row.get(spec.fields.get("id", ""), index)), images=[], fields={},
                                          metadata={"index": index}, error=f"bad row: {exc}"))
        except DatasetError as exc:
            if offline:
                raise DatasetError(offline_message(spec.name, str(ds.path), data_dir)) from exc
            raise
    return samples


def _hf_rows(ds: DatasetSpec) -> Iterable[dict[str, Any]]:
    dataset = _load_hf(ds)
    for column, feature in dataset.features.items():
        if type(feature).__name__ == "Image":
            from datasets import Image as ImageFeature

            dataset = dataset.cast_column(column, ImageFeature(decode=False))
    return dataset


def _load_hf(ds: DatasetSpec):
    import datasets

    datasets.logging.set_verbosity_error()
    try:
        if ds.format == "hf":
            return datasets.load_dataset(ds.path, ds.name, split=ds.split)
        builder = "json" if ds.format == "jsonl" else ds.format
        files = ds.data_files if ds.data_files is not None else ds.path
        _check_files(files)
        return datasets.load_dataset(builder, data_files=files, split=ds.split if isinstance(files, dict) else "train")
    except DatasetError:
        raise
    except Exception as exc:  # datasets raises many types; the user needs one clear message
        where = ds.path if ds.format == "hf" else ds.data_files or ds.path
        from evalkit.data.offline import download_command

        hint = (
            f" (tried {' and '.join(hub_ids(ds.path))} under --data-dir and in the hub cache; offline? download "
            f"it once with `{download_command(str(ds.path))}` and pass --data-dir DATA_DIR)"
            if ds.format == "hf" and not Path(ds.path).exists() else ""
        )
        raise DatasetError(f"cannot load dataset {where} split {ds.split!r}: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}{hint}") from exc


def _check_files(files: Any) -> None:
    paths = files.values() if isinstance(files, dict) else [files]
    for group in paths:
        for f in [group] if isinstance(group, str) else group:
            if "*" not in f and "://" not in f and not Path(f).exists():
                raise DatasetError(f"dataset file not found: {f}")

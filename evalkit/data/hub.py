"""`hub`: a hub dataset (or a local copy of one) plus the small row reshaping some benchmarks need.

Most lmms-lab repos map onto a Sample with the field mapping alone. A few do not:
- GQA keeps questions and images in two configs (`testdev_balanced_instructions` /
  `testdev_balanced_images`) joined by image id (`join`);
- ChartQA ships both test sets in one split, told apart by a `type` column (`where`);
- ScienceQA leaves `hint` empty where eval_mm prints "N/A" (`fill_empty`);
- AI2D, which eval_mm scores as open QA, needs the option text of the gold index and the options
  as lines (`pick`, `join_lines`);
- single-answer datasets (GQA, AI2D) give their answer as a one-element list, the shape every
  answer-list metric takes (`as_list`);
- MMBench keeps its options in columns A..D, empty where a question has fewer (`collect`), and its
  test submission echoes each row's text columns (`record`).
Each step is declared in the spec's `dataset.options`, so the spec still says everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

from evalkit.data.loader import SOURCE_ROW, DatasetError, _hf_rows, register_adapter
from evalkit.task import DatasetSpec


@register_adapter("hub", hub=True)
def hub_rows(ds: DatasetSpec) -> Iterator[dict[str, Any]]:
    opts = ds.options
    rows: Iterable[dict[str, Any]] = _hf_rows(replace(ds, format="hf"))
    where = opts.get("where") or {}
    lookup = _join_table(ds, opts["join"]) if opts.get("join") else None
    for position, row in enumerate(rows):
        if not _matches(row, where):
            continue
        row = dict(row)
        if lookup is not None:
            _join_row(row, opts["join"], lookup)
        row = reshape(row, opts)
        row[SOURCE_ROW] = position  # the row in the unfiltered split: lmms-eval's doc_id (not a `record` column)
        yield row


def _missing(value: Any) -> bool:
    """An empty cell: None, "", or the NaN pandas reads for an empty TSV cell (NaN != NaN)."""
    return value is None or value == "" or value != value


def reshape(row: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    """The per-row steps of `dataset.options` (module docstring), shared with the original-file
    adapters whose rows have the hub copy's columns (`evalkit.data.tsv`)."""
    if opts.get("record"):  # the row's own text columns, as read, for submission files that echo it
        row[opts["record"]] = {k: v for k, v in row.items() if isinstance(v, str | int | float) or v is None}
    for column, value in (opts.get("fill_empty") or {}).items():
        if _missing(row.get(column)):
            row[column] = value
    for column, (list_column, index_column) in (opts.get("pick") or {}).items():
        row[column] = row[list_column][int(row[index_column])]
    for column, list_column in (opts.get("join_lines") or {}).items():
        row[column] = "\n".join(str(x) for x in row[list_column])
    for column, source in (opts.get("as_list") or {}).items():
        row[column] = None if row.get(source) is None else [row[source]]
    for column, sources in (opts.get("collect") or {}).items():  # MMBench: options A..D, absent ones dropped
        row[column] = [row[c] for c in sources if not _missing(row.get(c))]
    return row


def _matches(row: dict[str, Any], where: dict[str, Any]) -> bool:
    for column, wanted in where.items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if row.get(column) not in allowed:
            return False
    return True


def _join_table(ds: DatasetSpec, join: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    """Rows of another config of the same repo and split, by key (GQA's image table)."""
    other = replace(ds, format="hf", name=join["config"], options={})
    key = join.get("right_on", "id")
    return {row[key]: row for row in _hf_rows(other)}


def _join_row(row: dict[str, Any], join: dict[str, Any], lookup: dict[Any, dict[str, Any]]) -> None:
    key = row.get(join["left_on"])
    match = lookup.get(key)
    if match is None:
        raise DatasetError(f"{join['config']}: no row with {join.get('right_on', 'id')}={key!r} "
                           f"for {join['left_on']}={key!r}; is the local copy complete?")
    for column in join.get("columns", ["image"]):
        row[column] = match[column]

"""Run-folder files: the append-only cache survives torn writes; loading bad folders is a clear error."""

from __future__ import annotations

import json

import pytest

from evalkit.results.runs import RunError, SampleCache, atomic_write_json, load_run
from evalkit.task import Prediction


def preds(n: int) -> list[Prediction]:
    return [Prediction(sample_id=str(i), task="t", output=f"answer {i}") for i in range(n)]


def test_cache_round_trip_and_torn_tail(tmp_path):
    cache = SampleCache(tmp_path / "s.jsonl")
    cache.append(preds(3))
    with open(cache.path, "a") as f:
        f.write('{"sample_id": "3", "task": "t", "outp')  # a kill mid-write
    loaded = cache.load()
    assert list(loaded) == ["0", "1", "2"]
    assert cache.path.read_text().endswith('"task": "t"}\n')  # the torn tail was cut off
    cache.append([Prediction(sample_id="3", task="t", output="x")])
    assert list(cache.load()) == ["0", "1", "2", "3"]


def test_cache_corrupt_middle_line_keeps_only_what_precedes(tmp_path):
    cache = SampleCache(tmp_path / "s.jsonl")
    cache.append(preds(2))
    with open(cache.path, "a") as f:
        f.write("garbage\n")
    cache.append(preds(4)[2:])
    assert list(cache.load()) == ["0", "1"]


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "run.json", {"b": 1, "a": float("nan")})
    assert json.loads((tmp_path / "run.json").read_text()) == {"a": None, "b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_load_run_errors(tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        load_run(tmp_path)
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(RunError, match="not valid JSON"):
        load_run(tmp_path)
    (tmp_path / "run.json").write_text('{"schema": "other"}')
    with pytest.raises(RunError, match="not an evalkit run"):
        load_run(tmp_path)

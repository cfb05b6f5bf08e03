"""Properties of the results loaders (hypothesis): a samples file cut at any byte, or with any bytes appended,
never makes `SampleCache.load` raise and never yields a prediction that was not written whole; a finished
file that is not whole is an error; `load_run` on any bytes is a Run or a RunError, nothing else.

(Torn writes and zero-filled tails are what kills and power losses leave; a bit flipped inside a
string that stays valid JSON is not detectable without checksums and is not claimed here.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from evalkit.results.runs import SCHEMA, RunError, SampleCache, atomic_write_json, load_run
from evalkit.task import Prediction

# text as models and datasets produce it, including what JSON escapes and a lone surrogate
text = st.text(alphabet=st.one_of(st.characters(), st.sampled_from(['"', "\\", "\n", "\r", "\u2028", "\ud800"])),
               max_size=20)
scores = st.dictionaries(st.text(max_size=5), st.floats(allow_nan=False, allow_infinity=False), max_size=2)


@st.composite
def predictions(draw) -> list[Prediction]:
    n = draw(st.integers(0, 6))
    return [Prediction(sample_id=f"{i}:{draw(text)}", task=draw(text), output=draw(text), answer=draw(text),
                       scores=draw(scores), error=draw(st.none() | text), references=draw(st.lists(text, max_size=3)))
            for i in range(n)]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("props")  # hypothesis reruns a test body many times in one function scope


def written(preds: list[Prediction], folder: Path) -> tuple[Path, bytes, list[int]]:
    """A fresh cache file holding `preds` (one append per prediction) and where each line ends."""
    path = folder / "s.jsonl"
    path.unlink(missing_ok=True)
    ends = []
    cache = SampleCache(path)
    for p in preds:
        cache.append([p])
        ends.append(path.stat().st_size)
    return path, path.read_bytes() if path.exists() else b"", ends


def as_json(preds) -> list[dict]:
    return [p.to_json() for p in preds]


@settings(max_examples=60, deadline=None)
@given(preds=predictions(), data=st.data())
def test_cut_at_any_byte_keeps_exactly_the_whole_lines(scratch, preds, data):
    path, raw, ends = written(preds, scratch)
    near_ends = [e + d for e in ends for d in (-1, 0, 1) if 0 <= e + d <= len(raw)]  # where tearing is subtle
    cut = data.draw(st.one_of(st.integers(0, len(raw)), *([st.sampled_from(near_ends)] if near_ends else [])))
    path.write_bytes(raw[:cut])
    whole = [p for p, end in zip(preds, ends) if end <= cut]
    boundary = cut in (0, *ends)
    if not boundary:
        with pytest.raises(RunError, match="torn or corrupt"):
            SampleCache(path).read_finished()
    else:
        assert as_json(SampleCache(path).read_finished()) == as_json(whole)
    assert as_json(SampleCache(path).load().values()) == as_json(whole)
    assert path.read_bytes() == raw[: ends[len(whole) - 1] if whole else 0]  # the torn tail is cut off
    if preds:  # and the file takes clean appends again: the lost line comes back when recomputed
        SampleCache(path).append(preds[len(whole):])
        assert as_json(SampleCache(path).load().values()) == as_json(preds)


@settings(max_examples=60, deadline=None)
@given(preds=predictions(), junk=st.one_of(st.binary(max_size=64), st.integers(1, 64).map(lambda n: b"\x00" * n)))
def test_appended_junk_never_raises_nor_invents_a_prediction(scratch, preds, junk):
    assume(b'"sample_id"' not in junk)  # bytes that spell out a whole record would be one
    path, raw, _ = written(preds, scratch)
    path.write_bytes(raw + junk)
    assert as_json(SampleCache(path).load().values()) == as_json(preds)
    assert path.read_bytes() == raw


@pytest.mark.parametrize("line", [b"[" * 100_000 + b"\n", b'{"sample_id": 5, "task": "t"}\n', b'"sample_id task"\n',
                                  b"null\n", b'{"task": "t"}\n', b"\xff\xfe\n", b"\n"])
def test_lines_that_are_not_whole_predictions(tmp_path, line):
    cache = SampleCache(tmp_path / "s.jsonl")
    cache.append([Prediction(sample_id="a", task="t", output="x")])
    with open(cache.path, "ab") as f:
        f.write(line)
    assert list(cache.load()) == ["a"]


@settings(max_examples=80, deadline=None)
@given(data=st.binary(max_size=200))
def test_load_run_on_any_bytes_is_a_run_or_a_run_error(scratch, data):
    folder = scratch
    (folder / "run.json").write_bytes(data)
    try:
        run = load_run(folder)
    except RunError:
        return
    assert run.data["schema"] == SCHEMA


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(0, 10_000), tasks=st.dictionaries(text, st.floats(allow_nan=True), max_size=4))
def test_truncated_run_json_is_never_read_as_valid(scratch, cut, tasks):
    folder = scratch
    atomic_write_json(folder / "run.json", {"schema": SCHEMA, "tasks": {k: {"value": v} for k, v in tasks.items()}})
    raw = (folder / "run.json").read_bytes()
    cut = min(cut, len(raw))
    (folder / "run.json").write_bytes(raw[:cut])
    if raw[:cut].strip() == raw.strip():
        assert load_run(folder).data == json.loads(raw)
    else:
        with pytest.raises(RunError):
            load_run(folder)


def test_atomic_writes_keep_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "run.json", {})
        SampleCache(tmp_path / "s.jsonl").finalize([Prediction(sample_id="a", task="t")])
    finally:
        os.umask(old)
    assert (tmp_path / "run.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600: teammates can read it
    assert (tmp_path / "s.jsonl").stat().st_mode & 0o777 == 0o644

"""`evalkit check`, the CI gate: exit 1 only for significant drops beyond --max-drop (or missing data)."""

from __future__ import annotations

import json

import pytest
from run_fixtures import FakeTask, write_run

from evalkit.cli import main
from evalkit.results.check import check_run
from evalkit.results.runs import open_run


def vqa(correct: int, n: int = 100, **kw) -> FakeTask:
    return FakeTask("vqa_t", [1.0] * correct + [0.0] * (n - correct), **kw)


def cap(metric: str = "cider", **kw) -> FakeTask:
    return FakeTask("cap_t", [0.2, 1.4, 0.9, 1.1, 0.6, 1.3] * 5, metric=metric, groups=["captioning"], **kw)


@pytest.fixture
def base(tmp_path):
    return write_run(tmp_path / "base", [vqa(80), cap()])


def check(capsys, *args) -> tuple[int, str]:
    try:
        code = main(["check", *map(str, args)])
    except SystemExit as exc:  # argparse rejects bad flag values itself, with exit 2
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_identical_run_passes(base, tmp_path, capsys):
    same = write_run(tmp_path / "same", [vqa(80), cap()])
    code, out = check(capsys, same, "--baseline", base)
    assert code == 0 and "PASS: 2 metrics checked, none regressed" in out


def test_significant_drop_fails(base, tmp_path, capsys):
    worse = write_run(tmp_path / "worse", [vqa(60), cap()])
    code, out = check(capsys, worse, "--baseline", base)
    assert code == 1
    assert "vqa_t" in out and "regressed" in out and "(paired, n=100)" in out and "-20.00" in out
    assert "cap_t" not in out.split("FAIL")[0].split("\n", 2)[2]  # only what regressed is listed
    assert "FAIL: 1 regressed, 0 missing, of 2 metrics checked" in out


def test_drop_not_significant_or_within_max_drop_passes(base, tmp_path, capsys):
    slightly = write_run(tmp_path / "slightly", [vqa(79), cap()])  # -1 point, one discordant sample
    code, out = check(capsys, slightly, "--baseline", base, "-v")
    assert code == 0 and "drop not significant" in out
    assert check(capsys, slightly, "--baseline", base, "--significance", "1")[0] == 1  # 1: the drop alone decides
    worse = write_run(tmp_path / "worse", [vqa(60), cap()])
    code, out = check(capsys, worse, "--baseline", base, "--max-drop", "25")
    assert code == 0
    code, _ = check(capsys, worse, "--baseline", base, "--significance", "1e-9")
    assert code == 0


def test_missing_task_or_metric_fails_unless_allowed(base, tmp_path, capsys):
    partial = write_run(tmp_path / "partial", [vqa(80)])
    code, out = check(capsys, partial, "--baseline", base)
    assert code == 1 and "missing: task not in run" in out
    code, out = check(capsys, partial, "--baseline", base, "--allow-missing")
    assert code == 0 and "missing (allowed)" in out
    renamed = write_run(tmp_path / "renamed", [vqa(80), cap(metric="bleu4")])
    code, out = check(capsys, renamed, "--baseline", base)
    assert code == 1 and "missing: metric not in run" in out


def test_unusable_input_exits_2(base, tmp_path, capsys):
    assert check(capsys, base, "--baseline", tmp_path / "nope.json")[0] == 2
    assert check(capsys, tmp_path / "no_run", "--baseline", base)[0] == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    code, out = check(capsys, base, "--baseline", bad)
    assert code == 2 and "not valid JSON" in out
    assert check(capsys, base, "--baseline", base, "--max-drop", "-1")[0] == 2
    assert check(capsys, base, "--baseline", tmp_path, "--update-baseline")[0] == 2  # a folder, not a file
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"schema": "evalkit.run/1", "tasks": {}}))
    code, out = check(capsys, base, "--baseline", empty)
    assert code == 2 and "no metric values" in out


def test_update_baseline_writes_a_file_that_then_passes(base, tmp_path, capsys):
    file = tmp_path / "baselines" / "demo.json"
    code, out = check(capsys, base, "--baseline", file, "--update-baseline")
    assert code == 0 and f"baseline written: {file}" in out
    assert json.loads(file.read_text())["tasks"].keys() == {"vqa_t", "cap_t"}
    assert [p.name for p in file.parent.iterdir()] == ["demo.json"]  # atomic: no temp file left
    assert check(capsys, base, "--baseline", file)[0] == 0


def test_bare_baseline_uses_the_cis(base, tmp_path, capsys):
    file = tmp_path / "demo.json"
    assert check(capsys, base, "--baseline", file, "--update-baseline")[0] == 0
    worse = write_run(tmp_path / "worse", [vqa(60), cap()])
    code, out = check(capsys, worse, "--baseline", file)
    assert code == 1 and "(ci)" in out


def test_untestable_drop_fails_closed(tmp_path):
    base = open_run(write_run(tmp_path / "a", [cap(entry={"metrics": {"bleu4": {"value": 0.40, "n": 30}}})], samples=False))
    run = open_run(write_run(tmp_path / "b", [cap(entry={"metrics": {"bleu4": {"value": 0.38, "n": 30}}})], samples=False))
    result = check_run(run, base)
    assert result.failed and result.regressed[0].reason.startswith("no per-sample scores or CIs")
    assert not check_run(run, base, max_drop=2.5).failed

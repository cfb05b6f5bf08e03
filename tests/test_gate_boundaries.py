"""The gate's and the comparison's thresholds on their boundaries: `--max-drop` exactly at the drop,
significance exactly at alpha, the CI z-test at its 95% level.

Expected p-values are exact by hand: five discordant pairs all one way give McNemar's exact
p = 2 * 0.5**5 = 0.0625; a z of 1.959964 gives the two-sided normal p = 0.05.
"""

from __future__ import annotations

import math

import pytest
from run_fixtures import FakeTask, write_run

from evalkit.cli import main
from evalkit.results.check import check_run
from evalkit.results.compare import build_table
from evalkit.results.runs import open_run
from evalkit.results.significance import Significance, ci_z_test


def vqa(correct: int, n: int = 100) -> FakeTask:
    return FakeTask("vqa_t", [1.0] * correct + [0.0] * (n - correct))


def gate(capsys, run, base, *flags) -> int:
    code = main(["check", str(run), "--baseline", str(base), *flags])
    capsys.readouterr()
    return code


def test_max_drop_exactly_at_the_drop_passes(tmp_path, capsys):
    # 80 -> 79 correct of 100: a drop of exactly 1.00 points (0.80 * 100 - 0.79 * 100 == 1.0 in floats)
    base = write_run(tmp_path / "base", [vqa(80)])
    run = write_run(tmp_path / "run", [vqa(79)])
    result = check_run(open_run(run), open_run(base), max_drop=1.0, alpha=1.0)
    assert result.findings[0].drop == 1.0 and not result.failed
    assert result.findings[0].reason == "within --max-drop"
    assert gate(capsys, run, base, "--max-drop", "1", "--significance", "1") == 0
    assert gate(capsys, run, base, "--max-drop", "0.99", "--significance", "1") == 1


def test_no_drop_and_a_rise_pass_with_zero_max_drop(tmp_path, capsys):
    base = write_run(tmp_path / "base", [vqa(80)])
    for correct in (80, 90):
        run = write_run(tmp_path / f"run{correct}", [vqa(correct)])
        result = check_run(open_run(run), open_run(base), max_drop=0.0, alpha=1.0)
        assert not result.failed and result.findings[0].reason == ""
    assert check_run(open_run(write_run(tmp_path / "r79", [vqa(79)])), open_run(base), max_drop=0.0, alpha=1.0).failed


def test_significance_exactly_at_alpha_is_not_significant(tmp_path, capsys):
    # 80 -> 75: the five samples 75..79 go from right to wrong, nothing else changes: exact McNemar p = 0.0625.
    base = write_run(tmp_path / "base", [vqa(80)])
    run = write_run(tmp_path / "run", [vqa(75)])
    finding = check_run(open_run(run), open_run(base), max_drop=0.5, alpha=0.0625).findings[0]
    assert finding.significance.p == 0.0625 and finding.significance.method == "paired"
    assert finding.status == "ok" and finding.reason == "drop not significant"  # p < alpha is required
    assert gate(capsys, run, base, "--significance", "0.0625") == 0
    assert gate(capsys, run, base, "--significance", "0.0626") == 1
    assert gate(capsys, run, base) == 0  # the default 0.05: five flipped samples of 100 are not significant


def test_compare_marks_a_delta_only_below_alpha(tmp_path):
    a = open_run(write_run(tmp_path / "base", [vqa(80)]))
    b = open_run(write_run(tmp_path / "run", [vqa(75)]))
    at = build_table([a, b], baseline=a, alpha=0.0625).display_frame().set_index("task").loc["vqa_t", "run"]
    above = build_table([a, b], baseline=a, alpha=0.0626).display_frame().set_index("task").loc["vqa_t", "run"]
    assert at.endswith("-5.00") and above.endswith("-5.00*")


def test_ci_z_test_is_at_the_95_percent_level():
    # SE of each side = CI width / (2 * 1.959964); a difference of 1.959964 * sqrt(se_a^2 + se_b^2) is p = 0.05.
    z95 = 1.959963984540054
    se = 0.01
    half = z95 * se
    a = {"value": 0.5, "ci95": [0.5 - half, 0.5 + half]}
    diff = z95 * math.hypot(se, se)
    b = {"value": 0.5 - diff, "ci95": [0.5 - diff - half, 0.5 - diff + half]}
    sig = ci_z_test(a, b)
    assert sig.method == "ci" and sig.p == pytest.approx(0.05, rel=1e-4)  # 3.92 vs 2 * 1.959964: 2e-5 relative
    assert ci_z_test(a, {**b, "value": 0.5 - 1.1 * diff}).p < 0.05 < ci_z_test(a, {**b, "value": 0.5 - 0.9 * diff}).p
    assert ci_z_test(a, b).p == ci_z_test(b, a).p  # two-sided
    zero = {"value": 0.5, "ci95": [0.5, 0.5]}
    assert ci_z_test(zero, zero).p == 1.0 and ci_z_test(zero, {"value": 0.4, "ci95": [0.4, 0.4]}).p == 0.0
    assert ci_z_test(a, {"value": 0.4}).p is None and ci_z_test(a, {"value": None, "ci95": [0, 1]}).p is None


# ------------------------------------------------------------------------------------------------ what the gate checks


def two_metrics(a: float | None, b: float | None, **extra) -> FakeTask:
    metrics = {}
    if a is not None or "a_none" in extra:
        metrics["a"] = {"value": a, "n": 30}
    if b is not None:
        metrics["b"] = {"value": b, "n": 30}
    return FakeTask("cap_t", [0.5] * 30, metric="a", groups=["captioning"], entry={"metrics": metrics})


def test_check_run_defaults(tmp_path):
    base = open_run(write_run(tmp_path / "base", [vqa(80)]))
    assert check_run(open_run(write_run(tmp_path / "r79", [vqa(79)])), base, alpha=1.0).failed  # 1 > 0.5 points
    assert not check_run(open_run(write_run(tmp_path / "r75", [vqa(75)])), base).failed  # p 0.0625 >= 0.05
    assert check_run(open_run(write_run(tmp_path / "none", [FakeTask("other_t", [1.0] * 4)])), base).failed


def test_every_metric_after_a_missing_or_passing_one_is_still_checked(tmp_path):
    base = open_run(write_run(tmp_path / "base", [two_metrics(0.5, 0.9)], samples=False))
    within = check_run(open_run(write_run(tmp_path / "w", [two_metrics(0.5, 0.5)], samples=False)), base)
    assert [f.status for f in within.findings] == ["ok", "regressed"]  # b: no CI, the drop alone decides
    missing = check_run(open_run(write_run(tmp_path / "m", [two_metrics(None, 0.5)], samples=False)), base)
    assert [(f.metric, f.status, f.reason) for f in missing.findings] == [
        ("a", "missing", "metric not in run"), ("b", "regressed", "no per-sample scores or CIs: drop alone decides")]
    no_value = check_run(open_run(write_run(tmp_path / "n", [two_metrics(None, 0.9, a_none=True)], samples=False)), base)
    assert no_value.findings[0].reason == "no value" and no_value.failed
    base_without = open_run(write_run(tmp_path / "bw", [two_metrics(None, 0.9, a_none=True)], samples=False))
    result = check_run(open_run(write_run(tmp_path / "r", [two_metrics(0.5, 0.5)], samples=False)), base_without)
    assert "cap_t: a: the baseline has no value; not checked" in result.warnings
    assert [f.metric for f in result.findings] == ["b"] and result.failed


def test_private_answer_tasks_are_not_gated(tmp_path):
    # sorted before vqa_t, and with a stored value: were it gated, the run (which lacks it) would fail
    private = FakeTask("a_testdev", [0.0] * 4, entry={"submission": "sub.json"})
    base = open_run(write_run(tmp_path / "base", [private, vqa(80)]))
    assert list(base.tasks) == ["a_testdev", "vqa_t"] and base.tasks["a_testdev"]["metrics"]
    result = check_run(open_run(write_run(tmp_path / "run", [vqa(80)])), base)
    assert [f.key for f in result.findings] == ["vqa_t"] and not result.failed


def test_warnings_name_every_mismatch_and_ungated_task(tmp_path):
    base = open_run(write_run(tmp_path / "base", [vqa(80), FakeTask("cap_t", [0.5] * 30, metric="cider")]))
    other_prompts = [FakeTask("vqa_t", [1.0] * 80 + [0.0] * 20, entry={"prompt_hash": "p2"}),
                     FakeTask("cap_t", [0.5] * 30, metric="cider", entry={"prompt_hash": "p3"}),
                     FakeTask("new_t", [1.0] * 3)]
    result = check_run(open_run(write_run(tmp_path / "run", other_prompts)), base)
    text = "\n".join(result.warnings)
    assert "vqa_t: run vs base: different prompt (prompt hash prompt vs p2)" in text
    assert "cap_t: run vs base: different prompt (prompt hash prompt vs p3)" in text
    assert result.warnings[-1] == "not in the baseline, so not gated: new_t"
    two_new = check_run(open_run(write_run(tmp_path / "two", [vqa(80), FakeTask("n1_t", [1.0]), FakeTask("n2_t", [1.0])])),
                        open_run(write_run(tmp_path / "b1", [vqa(80)])))
    assert two_new.warnings[-1] == "not in the baseline, so not gated: n1_t, n2_t"
    partial = check_run(open_run(write_run(tmp_path / "partial", [vqa(80)])), base)
    assert not any("cap_t" in w for w in partial.warnings)  # a missing task is a finding, not a mismatch note
    # different sample sets: the note counts the shared samples, and the test uses only those
    shifted = FakeTask("vqa_t", [1.0] * 80 + [0.0] * 20, ids=[str(i) for i in range(2, 102)])
    result = check_run(open_run(write_run(tmp_path / "shifted", [shifted])), base, alpha=1.0)
    assert "vqa_t: shifted vs base: different sample sets (98 shared of 100 / 100" in "\n".join(result.warnings)


def test_significance_uses_shared_samples_and_falls_back_to_the_cis(tmp_path):
    from evalkit.results.significance import ScoreBook, significance_of

    base = open_run(write_run(tmp_path / "base", [FakeTask("vqa_t", [1.0, 1.0, 1.0], ids=["a", "b", "c"])]))
    run = open_run(write_run(tmp_path / "run", [FakeTask("vqa_t", [0.0, 0.0, 0.0], ids=["b", "c", "d"])]))
    sig = significance_of(ScoreBook(), base, run, "vqa_t", "accuracy")
    assert (sig.method, sig.n_shared, sig.p) == ("paired", 2, 0.5)  # exactly 2 shared: McNemar 2 vs 0 -> 0.5
    bare = open_run(write_run(tmp_path / "bare", [vqa(80)], samples=False))
    assert significance_of(ScoreBook(), bare, run, "vqa_t", "accuracy").method == "ci"
    assert significance_of(ScoreBook(), bare, run, "missing_t", "accuracy") == Significance(None, "none")
    assert ci_z_test({"value": 0.5, "ci95": [0.5, 0.5]}, {"value": 0.4, "ci95": [0.4, 0.4]}).method == "ci"
    # a bare baseline has no samples: a different fingerprint is noted with the hashes
    moved = open_run(write_run(tmp_path / "moved", [FakeTask("vqa_t", [1.0] * 80 + [0.0] * 20,
                                                             ids=[f"x{i}" for i in range(100)])]))
    assert any("different sample sets (dataset fingerprint" in w for w in check_run(moved, bare, alpha=1.0).warnings)


def test_check_flags(tmp_path, capsys):
    base = write_run(tmp_path / "base", [vqa(80)])
    same = write_run(tmp_path / "same", [vqa(80)])
    assert gate(capsys, same, base, "--max-drop", "0") == 0  # 0 is allowed: any significant drop fails
    code = main(["check", str(same), "--baseline", str(base), "-v"])
    out = capsys.readouterr().out
    assert code == 0 and "vqa_t" in out.split("PASS")[0]  # -v lists the passing metric
    assert "max drop 0.5 points, significance 0.05" in out
    main(["check", str(same), "--baseline", str(base)])
    assert "vqa_t" not in capsys.readouterr().out.split("PASS")[0]
    for bad, message in (("abc", "expected a number, got 'abc'"), ("-1", "--max-drop: must be >= 0")):
        with pytest.raises(SystemExit):
            main(["check", str(same), "--baseline", str(base), "--max-drop", bad])
        assert message in capsys.readouterr().err
    assert main(["check", str(same), "--baseline", str(tmp_path / "nope.json")]) == 2
    assert "baseline " + str(tmp_path / "nope.json") + " not found; create it with --update-baseline" in capsys.readouterr().err


def test_mismatch_notes_say_what_differs(tmp_path):
    from evalkit.results.compare import mismatches
    from evalkit.results.significance import ScoreBook

    base = open_run(write_run(tmp_path / "base", [vqa(80)]))
    spec = open_run(write_run(tmp_path / "spec", [FakeTask("vqa_t", [1.0] * 80 + [0.0] * 20, entry={"spec_hash": "s2"})]))
    assert mismatches(ScoreBook(), base, spec, "vqa_t") == ["vqa_t: spec vs base: different task spec (spec hash spec vs s2)"]
    moved = open_run(write_run(tmp_path / "moved", [FakeTask("vqa_t", [1.0] * 3, ids=["x", "y", "z"])]))
    assert mismatches(ScoreBook(), base, moved, "vqa_t") == [
        "vqa_t: moved vs base: different sample sets (0 shared of 100 / 3; the delta compares different data, "
        "the test uses shared samples only)"]
    bare = open_run(write_run(tmp_path / "bare", [vqa(80)], samples=False))
    fa, fb = bare.tasks["vqa_t"]["dataset_fingerprint"], moved.tasks["vqa_t"]["dataset_fingerprint"]
    assert mismatches(ScoreBook(), bare, moved, "vqa_t") == [
        f"vqa_t: moved vs bare: different sample sets (dataset fingerprint {fa} vs {fb})"]
    # the seed only matters where shots are sampled: a 4-shot result notes it, a 0-shot one does not
    seeded = open_run(write_run(tmp_path / "seeded", [vqa(80)], seed=1))
    assert mismatches(ScoreBook(), base, seeded, "vqa_t") == []
    shots_a = open_run(write_run(tmp_path / "sa", [FakeTask("vqa_t", [1.0] * 4, shots=4)]))
    for a, b in ((shots_a, open_run(write_run(tmp_path / "sb", [FakeTask("vqa_t", [1.0] * 4, shots=4)], seed=1))),
                 (open_run(write_run(tmp_path / "sc", [FakeTask("vqa_t", [1.0] * 4, shots=4, entry={"shots": 0})])),
                  open_run(write_run(tmp_path / "sd", [FakeTask("vqa_t", [1.0] * 4, shots=4)], seed=1)))):
        assert mismatches(ScoreBook(), a, b, "vqa_t_4shot") == [
            f"{b.label} vs {a.label}: different setting seed (0 vs 1)"]
    assert mismatches(ScoreBook(), open_run(write_run(tmp_path / "se", [FakeTask("vqa_t", [1.0] * 4, shots=4)], seed=1)),
                      open_run(write_run(tmp_path / "sf", [FakeTask("vqa_t", [1.0] * 4, shots=4, entry={"shots": 0})])),
                      "vqa_t_4shot") == ["sf vs se: different setting seed (1 vs 0)"]


def test_a_run_json_path_keeps_its_samples_and_a_copied_baseline_has_none(tmp_path):
    from evalkit.results.runs import RunError
    from evalkit.results.significance import ScoreBook, significance_of

    base = write_run(tmp_path / "base", [vqa(80)])
    run = write_run(tmp_path / "run", [vqa(60)])
    by_file = significance_of(ScoreBook(), open_run(base / "run.json"), open_run(run / "run.json"), "vqa_t", "accuracy")
    assert by_file.method == "paired"  # run.json inside a run folder: the samples beside it are used
    copy = tmp_path / "baselines" / "base.json"
    copy.parent.mkdir()
    copy.write_text((base / "run.json").read_text())
    bare = open_run(copy)
    with pytest.raises(RunError, match=r"base\.json is a bare run\.json: it has no per-sample scores$"):
        bare.samples("vqa_t")
    assert significance_of(ScoreBook(), bare, open_run(run), "vqa_t", "accuracy").method == "ci"

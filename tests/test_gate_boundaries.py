"""The gate's and the comparison's thresholds on their boundaries: `--max-drop` exactly at the drop,
significance exactly at alpha, the CI z-test at its 95% level.

Expected p-values are exact by hand: five discordant pairs all one way give McNemar's exact
p = 2 * 0.5**5 = 0.0625; a z of 1.959964 gives the two-sided normal p = 0.05.
"""

from __future__ import annotations

import math

import pytest
from run_fixtures import FakeTask, write_run

from evalkit.check import check_run
from evalkit.cli import main
from evalkit.compare import build_table, ci_z_test, open_run


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

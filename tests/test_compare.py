"""`evalkit compare` / `evalkit diff` on hand-built run folders: values, deltas, marks, flags, formats."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from conftest import PAPER_NUMBERS
from run_fixtures import FakeTask, write_run

from evalkit.cli import main
from evalkit.results.compare import build_table
from evalkit.results.diff import diff_runs
from evalkit.results.runs import open_run
from evalkit.results.significance import ScoreBook, significance_of


def vqa(correct: int, n: int = 100, **kw) -> FakeTask:
    return FakeTask("vqa_t", [1.0] * correct + [0.0] * (n - correct), **kw)


def cap(**kw) -> FakeTask:
    return FakeTask("cap_t", [0.2, 1.4, 0.9, 1.1, 0.6, 1.3] * 5, metric="cider", groups=["captioning"], **kw)


@pytest.fixture
def runs(tmp_path):
    a = write_run(tmp_path / "base", [vqa(80), cap()])
    b = write_run(tmp_path / "worse", [vqa(60), cap()])
    return a, b


def test_table_values_deltas_and_marks(runs):
    a, b = (open_run(p) for p in runs)
    table = build_table([a, b], baseline=a)
    frame = table.display_frame()
    assert list(frame["task"]) == ["cap_t", "vqa_t"]  # paper order: captioning before general VQA
    assert list(frame["group"]) == ["Captioning", "General VQA"]
    vqa_row = frame.set_index("task").loc["vqa_t"]
    assert vqa_row["base"].startswith("80.00 [")
    assert vqa_row["worse"].startswith("60.00 [") and vqa_row["worse"].endswith("-20.00*")
    assert frame.set_index("task").loc["cap_t", "worse"].endswith("+0.00")  # identical: no mark
    numbers = table.numeric_frame().set_index("task")
    assert numbers.loc["vqa_t", "worse delta"] == pytest.approx(-20.0)
    assert numbers.loc["vqa_t", "worse p"] < 1e-4  # McNemar on 20 discordant pairs, all one way
    assert numbers.loc["cap_t", "worse p"] == pytest.approx(1.0)
    assert table.notes == []


def test_small_drop_is_not_marked(tmp_path):
    a = open_run(write_run(tmp_path / "a", [vqa(80)]))
    b = open_run(write_run(tmp_path / "b", [vqa(79)]))
    cell = build_table([a, b], baseline=a).rows[0].cells["b"]
    assert cell.delta == pytest.approx(-1.0)
    assert cell.significance.method == "paired" and cell.significance.n_shared == 100
    assert not cell.significance.below(0.05)


def test_mismatches_are_flagged(tmp_path):
    a = open_run(write_run(tmp_path / "a", [vqa(80)]))
    other_ids = [str(i + 50) for i in range(100)]
    b = open_run(write_run(tmp_path / "b", [vqa(80, ids=other_ids, entry={"prompt_hash": "p2", "n_errors": 3})],
                           prompt_style="chat"))
    table = build_table([a, b])  # no baseline: flagged against the first run, no deltas
    text = "\n".join(table.notes)
    assert "different sample sets (50 shared of 100 / 100" in text
    assert "different prompt" in text and "b vs a: different setting prompt_style ('base' vs 'chat')" in text
    assert "3 of 100 samples failed" in text
    cell = table.display_frame().iloc[0]["b"]
    assert cell.startswith("80.00 [") and "[1]" in cell and "[4]" in cell
    assert table.rows[0].cells["b"].delta is None


def test_formats(runs):
    a, b = (open_run(p) for p in runs)
    table = build_table([a, b], baseline=a)
    md = table.render("md")
    assert md.splitlines()[0].startswith("| group") and "| worse" in md.splitlines()[0]
    assert "-20.00*" in md and "* p < 0.05" in md
    csv = pd.read_csv(io.StringIO(table.render("csv")))
    assert list(csv["task"]) == ["cap_t", "vqa_t"] and csv["worse delta"].iloc[1] == pytest.approx(-20.0)
    html = table.render("html")
    assert "<table" in html and "vqa_t" in html and "-20.00*" in html
    latex = table.render("latex")
    assert "\\begin{tabular}" in latex and "vqa\\_t" in latex and "-20.00*" in latex


def test_paper_column(tmp_path):
    run = write_run(tmp_path / "r", [FakeTask("okvqa_val", [1.0, 0.0]), FakeTask("okvqa_val", [1.0, 1.0], shots=4)])
    paper = json.loads(PAPER_NUMBERS.read_text())
    table = build_table([open_run(run)], paper=paper)
    frame = table.display_frame().set_index("task")
    assert frame.loc["okvqa_val", "Qwen-VL (paper)"] == "58.60"
    assert frame.loc["okvqa_val_4shot", "Qwen-VL (paper)"] == "63.60"
    assert frame.loc["okvqa_val_4shot", "Qwen-VL-Chat (paper)"] == "60.60"


def test_cli_paper_uses_the_repo_file(tmp_path, capsys):
    run = write_run(tmp_path / "r", [FakeTask("okvqa_val", [1.0, 0.0])])
    assert main(["compare", str(run), "--paper"]) == 0
    assert "| Qwen-VL (paper)" in capsys.readouterr().out
    assert main(["compare", str(run), "--paper", str(tmp_path / "missing.json")]) == 2


def test_bare_baseline_uses_ci_test_not_neighbouring_samples(tmp_path, runs):
    a, b = runs
    bare = tmp_path / "baselines" / "demo.json"
    bare.parent.mkdir()
    bare.write_text((a / "run.json").read_text())
    write_run(tmp_path / "baselines", [vqa(10)])  # a samples/ folder beside it must be ignored
    base = open_run(bare)
    assert base.label == "demo"
    sig = significance_of(ScoreBook(), base, open_run(b), "vqa_t", "accuracy")
    assert sig.method == "ci" and sig.p < 0.01


def test_cli_compare_and_filters(runs, capsys, tmp_path):
    a, b = runs
    assert main(["compare", str(a), str(b), "--baseline", str(a), "--tasks", "vqa"]) == 0
    out = capsys.readouterr().out
    assert "vqa_t" in out and "cap_t" not in out and "-20.00*" in out
    out_file = tmp_path / "t.csv"
    assert main(["compare", str(a), str(b), "--format", "csv", "-o", str(out_file)]) == 0
    assert pd.read_csv(out_file).shape[0] == 2
    assert main(["compare", str(a), str(tmp_path / "nope")]) == 2
    assert main(["compare", str(a), "--tasks", "gqa"]) == 2
    assert "no results for gqa" in capsys.readouterr().err


def test_help_texts_render(capsys):
    for argv in (["--help"], ["compare", "--help"], ["diff", "--help"], ["check", "--help"], ["report", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    assert "diff" in capsys.readouterr().out


def test_diff_orders_by_score_change(tmp_path, capsys):
    a = write_run(tmp_path / "a", [FakeTask("vqa_t", [1.0, 0.3, 1.0, 0.0], outputs=["red", "blue", "two", "no"])])
    b = write_run(tmp_path / "b", [FakeTask("vqa_t", [0.0, 0.6, 1.0, 0.0], outputs=["green", "teal", "2", "no"])])
    diff = diff_runs(open_run(a), open_run(b), "vqa_t")
    assert [d.sample_id for d in diff.disagreements] == ["0", "1", "2"]  # |-1|, |+0.3|, same score other output
    assert main(["diff", str(a), str(b), "--task", "vqa_t", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 shared samples, 3 differ (b better on 1, worse on 1, same score on 1)" in out
    assert 'a: "red"' in out and 'b: "green"' in out and "1 more" in out
    assert main(["diff", str(a), str(b), "--task", "gqa"]) == 2

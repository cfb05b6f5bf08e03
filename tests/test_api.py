"""The Python API (evalkit.evaluate / load_run / compare / list_tasks): the numbers it returns are
run.json's, its tables are the CLI's (the CLI calls the same functions), and `import evalkit`
stays cheap. Runs replay recorded outputs on the task fixtures (tests/fixtures/data), so nothing
is downloaded; the README's example (tests/test_readme.py runs it) covers the demo model."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import checkout_env
from fixtures.catalog import DATA, PREDS, registry

import evalkit
from evalkit.cli import main
from evalkit.registry import UnknownTaskError
from evalkit.results.runs import RunError

REPO = Path(__file__).resolve().parents[1]
TASKS = ["okvqa_val", "textvqa_val"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, evalkit.Run]:
    """`good` replays the fixture predictions; `bad` the same with every OK-VQA answer wrong."""
    root = tmp_path_factory.mktemp("api")
    wrong = root / "wrong_preds"
    shutil.copytree(PREDS, wrong)
    lines = [json.loads(line) for line in (wrong / "okvqa_val.jsonl").read_text().splitlines()]
    (wrong / "okvqa_val.jsonl").write_text("".join(json.dumps({**r, "output": "zebra"}) + "\n" for r in lines))
    return {
        "good": evalkit.evaluate(model=f"replay:{PREDS}", tasks=TASKS, output=root / "good", data_dir=DATA),
        "bad": evalkit.evaluate(model=f"replay:{wrong}", tasks=TASKS, output=root / "bad", data_dir=DATA),
    }


def test_import_evalkit_is_cheap():
    code = ("import sys, evalkit; print(sorted(m for m in ('torch', 'pandas', 'transformers', 'evalkit.api') "
            "if m in sys.modules)); print(all(callable(getattr(evalkit, n)) for n in evalkit.__all__ if n != '__version__'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=checkout_env(), capture_output=True, text=True,
                         check=True).stdout
    assert out.split("\n")[:2] == ["[]", "True"]


def test_evaluate_returns_the_run_it_wrote(runs):
    run = runs["good"]
    data = json.loads((run.path / "run.json").read_text())
    assert run.tasks == TASKS and run.data == data and run.label == "good"
    frame = run.metrics
    assert list(frame.columns) == ["task", "shots", "metric", "value", "ci_low", "ci_high", "n", "n_errors", "primary"]
    stored = [(k, name, m["value"]) for k, t in data["tasks"].items() for name, m in t["metrics"].items()]
    assert list(zip(frame.task, frame.metric, frame.value)) == stored
    primary = frame[frame.primary]
    assert list(primary.task) == TASKS and set(primary.metric) == {"vqa_accuracy"}
    ok = primary.set_index("task").loc["okvqa_val"]
    assert [ok.ci_low, ok.ci_high] == data["tasks"]["okvqa_val"]["metrics"]["vqa_accuracy"]["ci95"]


def test_samples_are_the_per_sample_records(runs):
    run = runs["good"]
    samples = run.samples("okvqa_val")
    n = run.data["tasks"]["okvqa_val"]["n_samples"]
    assert len(samples) == n and samples.sample_id.is_unique
    assert list(samples.columns[:7]) == ["sample_id", "prompt", "output", "answer", "references", "error", "metadata"]
    value = run.data["tasks"]["okvqa_val"]["metrics"]["vqa_accuracy"]["value"]
    assert samples.vqa_accuracy.mean() == pytest.approx(value)  # VQA accuracy is the mean of per-sample scores
    assert list(samples.output) == [p.output for p in run.predictions("okvqa_val")]
    assert (runs["bad"].samples("okvqa_val").output == "zebra").all()


def test_load_run_reads_what_evaluate_returned(runs):
    run = runs["good"]
    loaded = evalkit.load_run(run.path)
    pd.testing.assert_frame_equal(loaded.metrics, run.metrics)
    pd.testing.assert_frame_equal(loaded.samples("textvqa_val"), run.samples("textvqa_val"))
    baseline = evalkit.load_run(REPO / "results" / "baselines" / "demo.json")  # a bare run.json
    assert set(baseline.metrics.task) == {"demo_caption", "demo_vqa", "demo_textvqa", "demo_refcoco"}
    with pytest.raises(RunError, match="bare run.json"):
        baseline.samples("demo_vqa")
    with pytest.raises(RunError, match="no run found"):
        evalkit.load_run(run.path.parent / "missing")


def test_the_cli_runs_the_same_function(runs, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["run", "--model", f"replay:{PREDS}", "--tasks", ",".join(TASKS), "--data-dir", str(DATA),
                 "-o", str(out), "--no-progress"]) == 0
    assert runs["good"].table() in capsys.readouterr().out
    pd.testing.assert_frame_equal(evalkit.load_run(out).metrics, runs["good"].metrics)


def test_compare_returns_points_deltas_and_p_values(runs):
    good, bad = runs["good"], runs["bad"]
    table = evalkit.compare([good, bad], baseline=good)
    assert list(table.task) == ["okvqa_val", "textvqa_val"]
    for _, row in table.iterrows():
        a = good.data["tasks"][row.task]["metrics"]["vqa_accuracy"]
        b = bad.data["tasks"][row.task]["metrics"]["vqa_accuracy"]
        assert row.good == pytest.approx(100 * a["value"]) and row.bad == pytest.approx(100 * b["value"])
        assert [row["good ci_low"], row["good ci_high"]] == pytest.approx([100 * x for x in a["ci95"]])
        assert row["bad delta"] == pytest.approx(100 * (b["value"] - a["value"]))
    ok = table.set_index("task").loc["okvqa_val"]
    assert ok["bad delta"] < 0 and 0 < ok["bad p"] <= 1
    text = table.set_index("task").loc["textvqa_val"]
    assert text["bad delta"] == 0 and text["bad p"] == 1  # identical outputs
    assert "good delta" not in table.columns  # no delta of the baseline against itself


@pytest.mark.parametrize("fmt", ["md", "csv", "html", "latex"])
def test_compare_renders_what_evalkit_compare_prints(runs, fmt, capsys):
    good, bad = runs["good"], runs["bad"]
    rendered = evalkit.compare([str(good.path), bad], baseline=str(good.path / "run.json"), paper=True).render(fmt)
    assert main(["compare", str(good.path), str(bad.path), "--baseline", str(good.path), "--paper",
                 "--format", fmt]) == 0
    assert capsys.readouterr().out == rendered
    assert "Qwen-VL (paper)" in rendered and ("58.6" in rendered)  # paper.json's OK-VQA number


def test_a_baseline_outside_the_runs_is_the_first_column(runs):
    table = evalkit.compare([runs["bad"]], baseline=runs["good"].path)
    assert [c for c in table.columns if " " not in c and c not in ("group", "task", "metric")] == ["good", "bad"]
    assert type(table.head()) is pd.DataFrame  # a derived frame is plain: render shows the whole comparison


def test_list_tasks_is_the_registry():
    tasks = evalkit.list_tasks()
    assert list(tasks.columns) == ["task", "groups", "dataset", "split", "metric", "output", "paper", "paper_chat"]
    reg = registry()
    assert list(tasks.task) == sorted(reg.tasks)
    by_name = tasks.set_index("task")
    for name, spec in reg.tasks.items():
        assert by_name.groups[name] == spec.groups and by_name.split[name] == spec.dataset.split
    assert by_name.paper["okvqa_val"] == 58.6 and by_name.paper["refcocog_test"] == 85.48
    assert by_name.paper_chat["mme_perception"] == 1487.58 and math.isnan(by_name.paper["mme_perception"])
    assert by_name.paper["seedbench_img_files"] == by_name.paper["seedbench_img"] == 62.3  # either data route
    assert math.isnan(by_name.paper["vqav2_val"])  # not in the paper's tables
    assert by_name.dataset["okvqa_val"] == "lmms-lab-encoder/OK-VQA"
    assert by_name.dataset["demo_vqa"] == "evalkit/demo/assets/data/demo_vqa/test.parquet"


def test_evalkit_tasks_prints_list_tasks(capsys):
    assert main(["tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    printed = [" ".join(line.split()) for line in lines]
    for row in evalkit.list_tasks().itertuples(index=False):
        expected = " ".join(x for x in (row.task, ",".join(row.groups), row.dataset, row.split, row.metric, row.output) if x)
        assert any(line.startswith(expected + " ") or line == expected for line in printed), expected


def test_mistakes_are_clear_errors(tmp_path):
    with pytest.raises(UnknownTaskError, match="unknown task 'okvqa'"):
        evalkit.evaluate(model=f"replay:{PREDS}", tasks=["okvqa"], output=tmp_path / "x")
    with pytest.raises(ValueError, match="batch_size"):
        evalkit.evaluate(tasks=["demo_vqa"], output=tmp_path / "x", batch_size=0)
    with pytest.raises(ValueError, match="shots"):
        evalkit.evaluate(tasks=["demo_vqa"], output=tmp_path / "x", shots=[-1])
    assert not (tmp_path / "x").exists()  # nothing was loaded or written


def test_the_readme_documents_the_api_with_an_example():
    """tests/test_readme.py runs the README's python blocks; this checks the example covers the API."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"^```python\n(.*?)^```", section, flags=re.M | re.S)
    for call in ("evalkit.list_tasks(", "evalkit.evaluate(", "evalkit.load_run(", "evalkit.compare(", ".metrics",
                 ".samples(", ".render("):
        assert call in example

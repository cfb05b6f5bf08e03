"""The Qwen-VL paper task catalog: listed, run end to end on its fixtures, paper numbers in sync.

Every catalog task runs through the CLI with the replay model on tests/fixtures/data (a tiny
`--data-dir` in the real schemas) and must produce its metric in run.json, or, for the
private-answer splits, the evaluation server's submission file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from fixtures.catalog import DATA, PREDS, registry

from evalkit.cli import main

REPO = Path(__file__).resolve().parents[1]

CATALOG = sorted([
    "nocaps_val", "flickr30k_karpathy_test", "coco_karpathy_test", "vqav2_val", "vqav2_testdev", "okvqa_val",
    "gqa_testdev_balanced", "scienceqa_img_test", "vizwiz_val", "vizwiz_testdev", "textvqa_val", "docvqa_val",
    "docvqa_test", "chartqa_test_human", "chartqa_test_augmented", "ai2d_test", "ocrvqa_test", "refcoco_val",
    "refcoco_testA", "refcoco_testB", "refcocoplus_val", "refcocoplus_testA", "refcocoplus_testB",
    "refcocog_val", "refcocog_test",
])
GROUPS = {
    "captioning": {"nocaps_val", "flickr30k_karpathy_test", "coco_karpathy_test"},
    "chartqa_test": {"chartqa_test_human", "chartqa_test_augmented"},
    "grounding": {t for t in CATALOG if t.startswith("refcoco")},
}
SUBMISSIONS = {  # task -> the record keys its server expects
    "vqav2_testdev": ["answer", "question_id"],
    "vizwiz_testdev": ["answer", "image"],
    "docvqa_test": ["answer", "questionId"],
}


def test_evalkit_tasks_lists_the_whole_catalog(capsys):
    assert main(["tasks"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert set(CATALOG) <= listed


def test_groups():
    groups = registry().groups
    for group, tasks in GROUPS.items():
        assert set(groups[group]) == tasks
    paper = set(groups["qwen_vl_paper"])
    assert {"vqav2_testdev", "vizwiz_testdev", "docvqa_test", "ai2d_test", "ocrvqa_test"} <= paper
    assert not {"vqav2_val", "vizwiz_val", "docvqa_val", "coco_karpathy_test"} & paper  # not in the paper's tables
    assert set(groups["vqa"]) >= {"okvqa_val", "gqa_testdev_balanced", "scienceqa_img_test", "vizwiz_testdev"}
    assert set(groups["textvqa"]) >= {"textvqa_val", "docvqa_test", "chartqa_test_human", "ai2d_test", "ocrvqa_test"}


SERVERS = {"vqav2_testdev": "EvalAI", "vizwiz_testdev": "EvalAI", "docvqa_test": "rrc.cvc.uab.es"}


@pytest.mark.parametrize("task", CATALOG)
def test_task_runs_end_to_end_on_its_fixture(task, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--model", f"replay:{PREDS}", "--tasks", task, "--data-dir", str(DATA),
                 "--output", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "run.json").read_text())["tasks"][task]
    assert result["n_samples"] >= 2 and result["n_errors"] == 0
    if task in SUBMISSIONS:
        records = json.loads(Path(result["submission"]).read_text())
        assert len(records) == result["n_samples"]
        assert all(sorted(r) == SUBMISSIONS[task] for r in records)
        note = next(line for line in printed.splitlines() if "answers are private" in line)
        assert result["submission"] in note and SERVERS[task] in note  # the summary says where it goes
        return
    if "captioning" in registry().get(task).groups:  # CIDEr's subset caveat: the whole fixture is no subset
        assert "not comparable to full-split scores" not in printed
    primary = result["primary_metric"]
    assert primary is not None and result["metrics"][primary]["value"] is not None
    spec = registry().get(task)
    if spec.primary_metric == "grounding_accuracy":  # fixtures alternate a right and a wrong box
        assert result["metrics"][primary]["value"] == pytest.approx(0.5)


def test_scienceqa_is_scored_by_loglikelihood(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--model", f"replay:{PREDS}", "--tasks", "scienceqa_img_test", "--data-dir", str(DATA),
                 "--output", str(out), "--no-progress"]) == 0
    lines = [json.loads(x) for x in (out / "samples" / "scienceqa_img_test.jsonl").read_text().splitlines()]
    assert all(line["choice_scores"] for line in lines)
    assert [line["answer"] for line in lines] == [0, 1, 1, 0]  # the replayed letters A, B, B, A
    result = json.loads((out / "run.json").read_text())["tasks"]["scienceqa_img_test"]
    assert result["metrics"][result["primary_metric"]]["value"] == pytest.approx(0.75)


def test_four_shot_run_through_the_cli(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--model", f"replay:{PREDS}", "--tasks", "okvqa_val,vizwiz_testdev", "--shots", "0,4",
                 "--data-dir", str(DATA), "--output", str(out), "--no-progress"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert {"okvqa_val", "okvqa_val_4shot", "vizwiz_testdev", "vizwiz_testdev_4shot"} <= set(run["tasks"])
    for line in (out / "samples" / "okvqa_val_4shot.jsonl").read_text().splitlines():
        prompt = json.loads(line)["prompt"]
        assert prompt.count("<image>") == 5 and prompt.count(" Answer:") == 5
    assert Path(run["tasks"]["vizwiz_testdev_4shot"]["submission"]).exists()


def test_paper_numbers_are_keyed_by_task_names():
    paper = json.loads((REPO / "results" / "paper.json").read_text())
    assert paper["source"]
    names = set(registry().tasks) | set(registry().groups)
    for model, numbers in paper["models"].items():
        unknown = set(numbers) - names
        assert not unknown, f"{model}: {unknown}"
    assert paper["models"]["Qwen-VL"]["okvqa_val"] == 58.6


def test_readme_task_table_is_in_sync():
    sys.path.insert(0, str(REPO / "results"))
    try:
        import tasks_table
    finally:
        sys.path.pop(0)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert tasks_table.render(readme) == readme, "run: python results/tasks_table.py"


def test_fixtures_stay_small():
    total = sum(f.stat().st_size for d in (DATA, PREDS) for f in d.rglob("*") if f.is_file())
    assert total < 2_000_000, total

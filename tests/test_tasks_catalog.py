"""The Qwen-VL paper task catalog: listed, run end to end on its fixtures, paper numbers in sync.

Every catalog task runs through the CLI with the replay model on tests/fixtures/data (a tiny
`--data-dir` in the real schemas) and must score every sample as worked out by hand below (captioning:
as pycocoevalcap scores the fixture files directly), or, for the private-answer splits, write the
evaluation server's submission file.
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
    rows = [json.loads(x) for x in (out / "samples" / f"{task}.jsonl").read_text().splitlines()]
    if task in CAPTIONING:
        check_captions(task, rows, result)
        return
    expected = EXPECTED[task]
    assert primary == EXPECTED_METRIC[task]
    assert {r["sample_id"]: r["scores"][primary] for r in rows} == pytest.approx(expected, abs=1e-12)
    assert result["metrics"][primary]["value"] == pytest.approx(sum(expected.values()) / len(expected), abs=1e-12)
    if primary == "grounding_accuracy":
        # the right box (250,250),(749,749) of the 0..999 grid is the gold box [W/4, H/4, 3W/4, 3H/4] shrunk by
        # 1/999 of the image on each side: IoU (499/999 / (1/2))^2 = (998/999)^2 (float32: within 1e-6)
        ious = [r["scores"]["iou"] for r in rows]
        assert ious == pytest.approx([(998 / 999) ** 2 if expected[r["sample_id"]] else 0.0 for r in rows], abs=1e-6)


# Hand-computed per-sample scores of the replayed outputs (tests/fixtures/predictions) against the fixtures'
# references, by the rules in each metric's module docstring:
EXPECTED_METRIC = {
    **dict.fromkeys(["okvqa_val", "vqav2_val", "vizwiz_val", "textvqa_val"], "vqa_accuracy"),
    **dict.fromkeys(["gqa_testdev_balanced", "ai2d_test", "ocrvqa_test"], "exact_match"),
    "docvqa_val": "anls",
    **dict.fromkeys(["chartqa_test_human", "chartqa_test_augmented"], "relaxed_accuracy"),
    "scienceqa_img_test": "choice_accuracy",
    **dict.fromkeys(GROUPS["grounding"], "grounding_accuracy"),
}
EXPECTED: dict[str, dict[str, float]] = {
    # 8 humans give the answer, 2 say "other": a match is 1 (every 9-answer subset holds >= 7 of them)
    "okvqa_val": {"2971475": 1, "2971476": 0, "2971477": 1, "2971478": 0, "2971479": 1},  # unknown vs 1 / cake
    "vqav2_val": {"262148000": 1, "262148001": 1, "262148002": 0, "262148003": 1, "262148004": 1},  # Pink -> pink
    "vizwiz_val": {"VizWiz_val_00000000": 1, "VizWiz_val_00000001": 0,  # 7 humans agree; navy vs blue
                   "VizWiz_val_00000002": 1, "VizWiz_val_00000003": 1},
    "textvqa_val": {"34602": 1, "34603": 1, "34604": 1, "34605": 0, "34606": 1, "34607": 1},  # 1985 vs 1984
    # eval_mm's GQA clean-up: "The man." -> "man", "It is pink" -> "pink"; "right" vs "left"
    "gqa_testdev_balanced": {"201307251": 1, "201640614": 1, "202225914": 1, "20968379": 0},
    # ANLS: equal after normalising; "J Smith" vs "J. Smith" 1 - 1/8; "$1,250" vs "$1,250.00" 1 - 3/9
    "docvqa_val": {"49153": 1.0, "49154": 1 - 1 / 8, "49155": 1 - 3 / 9},
    # relaxed: 80 vs 78 within 5% either way; "yes" vs "Yes"; 0.3 vs 0.5; 2015 exact; 14 vs 12.5 is 11% off
    "chartqa_test_human": {"0": 1, "1": 1, "2": 0},
    "chartqa_test_augmented": {"0": 1, "1": 0},
    "ai2d_test": {"0": 1, "1": 1, "2": 0},  # D = D, Crust = crust, pupa vs larva
    "ocrvqa_test": {"1000_0": 1, "1000_1": 1, "1000_2": 0, "1001_0": 1, "1001_1": 1, "1001_2": 0},  # genres wrong
    "scienceqa_img_test": {"0": 1, "1": 0, "2": 1, "3": 1},  # replayed letters A, B, B, A vs gold 0, 0, 1, 0
    # each grounding fixture: a right box, then a wrong one
    "refcoco_val": {"2": 1, "3": 0}, "refcoco_testA": {"4": 1, "5": 0}, "refcoco_testB": {"6": 1, "7": 0},
    "refcocoplus_val": {"10": 1, "11": 0}, "refcocoplus_testA": {"12": 1, "13": 0},
    "refcocoplus_testB": {"14": 1, "15": 0}, "refcocog_val": {"18": 1, "19": 0}, "refcocog_test": {"20": 1, "21": 0},
}
CAPTIONING = {"coco_karpathy_test", "flickr30k_karpathy_test", "nocaps_val"}


def caption_references(task: str) -> dict[str, list[str]]:
    """The references as the fixture files hold them: Karpathy json (test split, `raw` sentences) or nocaps'
    COCO-format annotations."""
    if task == "nocaps_val":
        data = json.loads((DATA / "nocaps" / "nocaps_val_4500_captions.json").read_text())
        refs: dict[str, list[str]] = {}
        for a in data["annotations"]:
            refs.setdefault(str(a["image_id"]), []).append(a["caption"])
        return refs
    name, key = ("coco", "cocoid") if task == "coco_karpathy_test" else ("flickr30k", "imgid")
    data = json.loads((DATA / name / f"dataset_{name}.json").read_text())
    return {str(i[key]): [s["raw"] for s in i["sentences"]] for i in data["images"] if i["split"] == "test"}


def check_captions(task: str, rows: list[dict], result: dict) -> None:
    """Against pycocoevalcap run as COCOEvalCap.evaluate() runs it (PTBTokenizer on gts and res, then the
    scorers) on the fixture files and the replayed predictions. METEOR is compared with pycocoevalcap in
    tests/test_metrics_caption.py; here only its range (a second JVM would cost ~10 s)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs = caption_references(task)
    preds = {(r := json.loads(x))["sample_id"]: r["output"] for x in (PREDS / f"{task}.jsonl").read_text().splitlines()}
    assert [r["sample_id"] for r in rows] == list(preds) and set(preds) <= set(refs)
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in refs[i]] for i in preds})
    res = tokenizer.tokenize({i: [{"caption": preds[i]}] for i in preds})
    cider, cider_per_image = Cider().compute_score(gts, res)
    rouge, rouge_per_image = Rouge().compute_score(gts, res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    metrics = result["metrics"]
    assert result["primary_metric"] == "CIDEr"
    assert metrics["CIDEr"]["value"] == pytest.approx(cider, abs=1e-12)
    assert metrics["ROUGE_L"]["value"] == pytest.approx(rouge, abs=1e-12)
    assert [metrics[f"BLEU_{n}"]["value"] for n in range(1, 5)] == pytest.approx(bleu, abs=1e-12)
    order = list(gts)  # the scorers' per-image order
    assert {r["sample_id"]: r["scores"]["CIDEr"] for r in rows} == pytest.approx(dict(zip(order, cider_per_image)))
    assert {r["sample_id"]: r["scores"]["ROUGE_L"] for r in rows} == pytest.approx(dict(zip(order, rouge_per_image)))
    assert 0 < metrics["METEOR"]["value"] < 1


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

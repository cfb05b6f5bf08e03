"""The replay model reads evalkit, Qwen-VL eval_mm and lmms-eval --log_samples outputs."""

from __future__ import annotations

import json

import pytest

from evalkit.models import load_model
from evalkit.models.base import ModelError
from evalkit.models.replay import MissingPrediction
from evalkit.task import Request


def req(sample_id: str, index: int = -1, task: str = "t", choices=None) -> Request:
    return Request(sample_id=sample_id, task=task, parts=["q"], index=index, choices=choices)


def test_eval_mm_vqa_list(tmp_path):
    f = tmp_path / "vqav2_val_230101.json"
    f.write_text(json.dumps([{"question_id": 7, "answer": "two"}, {"questionId": 8, "answer": "cat"}]))
    model = load_model(f"replay:{f}")
    assert model.generate([req("8"), req("7")]) == ["cat", "two"]


def test_eval_mm_grounding_by_order_and_captions(tmp_path):
    f = tmp_path / "g.json"
    f.write_text(json.dumps([{"answer": "(1,2),(3,4)", "gt_bbox": [0, 0, 1, 1], "hw": [10, 10]},
                             {"answer": "(5,6),(7,8)", "gt_bbox": [0, 0, 1, 1], "hw": [10, 10]}]))
    assert load_model(f"replay:{f}").generate([req("x", 1), req("y", 0)]) == ["(5,6),(7,8)", "(1,2),(3,4)"]
    c = tmp_path / "c.json"
    c.write_text(json.dumps([{"image_id": 42, "caption": "a dog"}]))
    assert load_model(f"replay:{c}").generate([req("42")]) == ["a dog"]


def test_lmms_eval_log_samples_by_doc_id(tmp_path):
    f = tmp_path / "okvqa_val.jsonl"
    lines = [{"doc_id": 1, "doc": {}, "target": "x", "resps": [["raw"]], "filtered_resps": ["filtered"]},
             {"doc_id": 0, "resps": [["first"]]}]
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    model = load_model(f"replay:{tmp_path}")  # a directory: file found by task name
    assert model.generate([req("a", 0, "okvqa_val"), req("b", 1, "okvqa_val")]) == ["first", "filtered"]


def test_missing_prediction_and_bad_paths(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"sample_id": "1", "output": "x"}\n')
    with pytest.raises(MissingPrediction, match="no prediction for sample 2"):
        load_model(f"replay:{f}").generate([req("2")])
    with pytest.raises(ModelError, match="not found"):
        load_model(f"replay:{tmp_path / 'none.json'}")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(ModelError, match="neither JSON nor JSON lines"):
        load_model(f"replay:{bad}").generate([req("1")])
    with pytest.raises(ModelError, match="unknown model kind"):
        load_model("gpt5:x")


def test_replayed_choice_letter(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"sample_id": "1", "output": "B"}\n')
    scores = load_model(f"replay:{f}").loglikelihood([req("1", choices=[" A", " B", " C"])])[0]
    assert max(range(3), key=lambda i: scores[i].mean_logprob) == 1


def test_lmms_eval_log_into_a_filtered_task_scores_every_right_answer(tmp_path):
    """lmms-eval's doc_id numbers the unfiltered ChartQA test split (human and augmented rows together);
    chartqa_test_augmented keeps only the augmented rows. An all-correct log must score 1.0."""
    import pandas as pd
    from fixtures.catalog import HUB

    from evalkit.cli import main

    table = pd.read_parquet(HUB / "ChartQA" / "data" / "test-00000-of-00001.parquet")
    log = tmp_path / "chartqa_test_augmented.jsonl"
    log.write_text("".join(json.dumps({"doc_id": i, "target": a, "resps": [[a]], "filtered_resps": [a]}) + "\n"
                           for i, a in enumerate(table["answer"])))
    out = tmp_path / "run"
    assert main(["run", "--model", f"replay:{log}", "--tasks", "chartqa_test_augmented",
                 "--data-dir", str(HUB.parent), "-o", str(out)]) == 0
    metrics = json.loads((out / "run.json").read_text())["tasks"]["chartqa_test_augmented"]["metrics"]
    assert metrics["relaxed_accuracy"]["value"] == 1.0 and metrics["relaxed_accuracy"]["n"] == 2

"""Hub datasets under both lmms-lab organisations (a --data-dir copy or the hub cache), recorded in
run.json, and `evalkit tasks --show` listing where every file is looked for."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from fixtures.catalog import HUB, registry

from evalkit.cli import main
from evalkit.data import load_samples
from evalkit.data.loader import dataset_source

CHARTQA = HUB / "ChartQA"
TASK = "chartqa_test_augmented"


def old_name_copy(tmp_path):
    """A --data-dir holding the dataset as lmms-eval <= 0.7.2 named it: lmms-lab/ChartQA."""
    shutil.copytree(CHARTQA, tmp_path / "lmms-lab" / "ChartQA")
    return tmp_path


def test_data_dir_copy_under_the_old_organisation(tmp_path):
    data_dir = old_name_copy(tmp_path)
    samples = load_samples(registry().get(TASK), str(data_dir))
    assert [s.references for s in samples] == ["2015", "12.5"]
    source = dataset_source(registry().get(TASK), str(data_dir))
    assert source == {"repo": "lmms-lab/ChartQA", "found_in": "data_dir", "path": str(data_dir / "lmms-lab" / "ChartQA")}


def test_hub_cache_snapshot_under_the_old_organisation(tmp_path, monkeypatch):
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "datasets--lmms-lab--ChartQA"
    shutil.copytree(CHARTQA, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    samples = load_samples(registry().get(TASK))
    assert [s.references for s in samples] == ["2015", "12.5"]
    source = dataset_source(registry().get(TASK))
    assert source["repo"] == "lmms-lab/ChartQA" and source["found_in"] == "hf_cache" and commit in source["path"]


def test_run_json_records_which_copy_was_read(tmp_path):
    data_dir = old_name_copy(tmp_path / "data")
    table = pd.read_parquet(CHARTQA / "data" / "test-00000-of-00001.parquet")
    log = tmp_path / "preds.jsonl"
    log.write_text("".join(json.dumps({"doc_id": i, "resps": [[a]]}) + "\n" for i, a in enumerate(table["answer"])))
    assert main(["run", "--model", f"replay:{log}", "--tasks", TASK, "--data-dir", str(data_dir),
                 "-o", str(tmp_path / "run")]) == 0
    record = json.loads((tmp_path / "run" / "run.json").read_text())["tasks"][TASK]
    assert record["dataset_source"]["repo"] == "lmms-lab/ChartQA"
    assert record["dataset_source"]["found_in"] == "data_dir"


@pytest.mark.parametrize(("task", "expected"), [
    ("vizwiz_val", ["lmms-lab-encoder/VizWiz-VQA, lmms-lab/VizWiz-VQA", "{d}/lmms-lab/VizWiz-VQA",
                    "{d}/vizwiz/Annotations/train.json", "{d}/vizwiz/train.json", "{d}/vizwiz/train"]),
    ("refcoco_val", ["{d}/refcoco/refs(unc).p", "{d}/refcoco/instances.json", "{d}/coco/train2014"]),
])
def test_tasks_show_prints_every_place_looked_for(task, expected, tmp_path, capsys):
    assert main(["tasks", "--show", task, "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for text in expected:
        assert text.format(d=tmp_path) in out

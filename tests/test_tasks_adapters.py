"""The dataset adapters on their fixtures: original formats and the hub reshaping steps."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from fixtures.catalog import DATA, HUB, registry

from evalkit.data import load_samples
from evalkit.data.loader import _ADAPTERS, DatasetError
from evalkit.results.submission import write_submission
from evalkit.task import DatasetSpec, Prediction, Sample


def rows(fmt: str, **kwargs) -> list[dict]:
    return list(_ADAPTERS[fmt](DatasetSpec(format=fmt, **kwargs)))


# ------------------------------------------------------------------ captions


def test_karpathy_reads_only_the_test_split():
    coco = rows("karpathy", path=str(DATA / "coco" / "dataset_coco.json"), split="test")
    assert [r["image_id"] for r in coco] == [1007, 1008, 1009]  # cocoid; train/restval/val skipped
    assert coco[0]["image"] == "val2014/COCO_val2014_000000001007.jpg"
    assert coco[0]["captions"] == ["A photo number 7 of a kitchen.", "Kitchen scene 7 with a stove."]
    flickr = rows("karpathy", path=str(DATA / "flickr30k" / "dataset_flickr30k.json"), split="test")
    assert [(r["image_id"], r["image"]) for r in flickr] == [(7, "3007.jpg"), (8, "3008.jpg"), (9, "3009.jpg")]
    assert len(rows("karpathy", path=str(DATA / "coco" / "dataset_coco.json"), split="train")) == 5


def test_karpathy_task_images_resolve_under_the_data_dir():
    samples = load_samples(registry().get("flickr30k_karpathy_test"), str(DATA))
    assert all(Path(im.path).is_file() for s in samples for im in s.images)
    assert samples[0].images[0].load().mode == "RGB"


def test_coco_captions_nocaps_original_file():
    out = rows("coco_captions", path=str(DATA / "nocaps" / "nocaps_val_4500_captions.json"))
    assert [r["image_id"] for r in out] == [0, 1, 2]
    assert out[0]["image"] == "0000000000000000.jpg" and len(out[0]["captions"]) == 10
    assert (out[0]["width"], out[0]["height"], out[0]["domain"]) == (32, 20, "in-domain")


# ------------------------------------------------------------------ VQA files


def test_vqa_json_merges_questions_and_annotations():
    opts = {"questions_file": str(DATA / "vqav2" / "v2_OpenEnded_mscoco_train2014_questions.json"),
            "annotations_file": str(DATA / "vqav2" / "v2_mscoco_train2014_annotations.json"),
            "image_template": "COCO_train2014_{image_id:012d}.jpg"}
    out = rows("vqa_json", options=opts)
    assert len(out) == 6
    assert out[0]["image"] == "COCO_train2014_000000002000.jpg"
    assert out[0]["question"] == "what color is the box?" and out[0]["multiple_choice_answer"] == "pink"
    assert out[0]["answers"][0] == {"answer": "pink", "answer_confidence": "yes", "answer_id": 1}
    questions_only = rows("vqa_json", options={**opts, "annotations_file": None})
    assert "answers" not in questions_only[0]  # test splits: no annotations
    strings = rows("vqa_json", options={**opts, "answers": "strings"})
    assert strings[0]["answers"][:2] == ["pink", "pink"]


def test_textvqa_and_vizwiz_json():
    tv = rows("textvqa_json", path=str(DATA / "textvqa" / "TextVQA_0.5.1_val.json"))
    assert tv[0]["image"] == f"{tv[0]['image_id']}.jpg" and tv[0]["answers"][0] == "nokia"
    vw = rows("vizwiz_json", path=str(DATA / "vizwiz" / "train.json"))
    assert vw[0]["question_id"] == "VizWiz_train_00000000" and vw[0]["image"] == "VizWiz_train_00000000.jpg"
    assert vw[0]["answers"][0] == "cereal" and len(vw[0]["answers"]) == 10


def test_ocrvqa_json_one_row_per_question_of_the_split():
    test = rows("ocrvqa_json", path=str(DATA / "ocrvqa" / "dataset.json"), split="test")
    assert [r["question_id"] for r in test] == ["1000_0", "1000_1", "1000_2", "1001_0", "1001_1", "1001_2"]
    assert test[0]["answers"] == ["Frank Herbert"] and test[0]["image"] == "1000.jpg"
    assert len(rows("ocrvqa_json", path=str(DATA / "ocrvqa" / "dataset.json"), split="train")) == 12


# ------------------------------------------------------------------ RefCOCO


@pytest.mark.parametrize("dataset, refs, split", [("refcoco", "refs(unc).p", "testA"),
                                                  ("refcoco+", "refs(unc).p", "val"),
                                                  ("refcocog", "refs(umd).p", "test")])
def test_refcoco_boxes_in_pixels_with_image_sizes(dataset, refs, split):
    folder = DATA / dataset
    out = rows("refcoco", split=split, options={"refs_file": str(folder / refs),
                                                "instances_file": str(folder / "instances.json")})
    images = {im["id"]: im for im in json.loads((folder / "instances.json").read_text())["images"]}
    assert len(out) == 2 and out[0]["ref_id"] == out[1]["ref_id"]  # one row per expression
    assert [r["sentence"] for r in out] == ["man on the left", "guy in red shirt"]
    for r in out:
        w, h = images[r["image_id"]]["width"], images[r["image_id"]]["height"]
        assert (r["width"], r["height"]) == (w, h)
        assert r["bbox"] == pytest.approx([w * 0.25, h * 0.25, w * 0.75, h * 0.75])  # [x,y,w,h] -> corners
        assert r["image"] == images[r["image_id"]]["file_name"]


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_refs_pickle_loaded_without_running_code(tmp_path, monkeypatch):
    from evalkit.data.refcoco import read_refs

    real = DATA / "refcoco" / "refs(unc).p"
    plain = pickle.loads(real.read_bytes())
    py2 = tmp_path / "refs_py2.p"  # the refer repo's files were written by Python 2: protocol 2
    py2.write_bytes(pickle.dumps(plain, protocol=2))
    assert read_refs(str(real)) == read_refs(str(py2)) == plain
    evil = tmp_path / "refs(unc).p"
    evil.write_bytes(pickle.dumps([{"split": "val", "x": _RunsCode()}]))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError) as err:
        read_refs(str(evil))
    assert "refused" in str(err.value) and "system" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "pwned").exists()


def test_refcoco_task_samples():
    samples = load_samples(registry().get("refcoco_val"), str(DATA))
    s = samples[0]
    assert s.metadata["width"] == 48 and s.metadata["height"] == 64
    assert s.references == [12.0, 16.0, 36.0, 48.0]
    assert Path(s.images[0].path).is_file() and s.images[0].load().size == (48, 64)


# ------------------------------------------------------------------ hub reshaping


def test_gqa_joins_the_image_config():
    import pyarrow.parquet as pq

    images = pq.read_table(HUB / "GQA" / "testdev_balanced_images" / "testdev-00000-of-00001.parquet").to_pylist()
    by_id = {r["id"]: r["image"]["bytes"] for r in images}
    samples = load_samples(registry().get("gqa_testdev_balanced"), str(DATA))
    assert [s.id for s in samples] == ["201307251", "201640614", "202225914", "20968379"]
    for s in samples:
        assert s.images[0].data == by_id[s.metadata["image_id"]]
    assert samples[1].images[0].key == samples[2].images[0].key  # two questions on one image
    assert samples[0].references == ["yes"]


def test_chartqa_splits_by_type():
    human = load_samples(registry().get("chartqa_test_human"), str(DATA))
    augmented = load_samples(registry().get("chartqa_test_augmented"), str(DATA))
    assert [s.references for s in human] == ["78", "Yes", "0.5"]
    assert [s.references for s in augmented] == ["2015", "12.5"]


def test_scienceqa_empty_hint_reads_na():
    samples = load_samples(registry().get("scienceqa_img_test"), str(DATA))
    assert [s.fields["hint"] for s in samples][:2] == ["N/A", "Moles live underground."]
    assert [s.references for s in samples] == [0, 0, 1, 0]
    assert samples[2].fields["choices"] == ["Cincinnati", "Columbus", "Cleveland", "Toledo"]


def test_test_splits_without_answers_load():
    for task in ("vqav2_testdev", "vizwiz_testdev", "docvqa_test"):
        samples = load_samples(registry().get(task), str(DATA))
        assert samples and all(s.references is None and s.error is None for s in samples)


def test_hub_tasks_read_the_local_copy_under_data_dir():
    from evalkit.data.loader import resolve_dataset

    ds = resolve_dataset(registry().get("gqa_testdev_balanced"), str(DATA))
    assert ds.path == str(HUB / "GQA")
    fs = resolve_dataset(registry().get("okvqa_val"), str(DATA), split="train")
    assert fs.format == "vqa_json" and fs.options["questions_file"].startswith(str(DATA))


# ------------------------------------------------------------------ submissions


def test_submission_formats(tmp_path):
    samples = [Sample(id="4195880", images=[], fields={}), Sample(id="VizWiz_test_00000001", images=[], fields={})]
    preds = [Prediction(sample_id="4195880", task="t", output=" two ", answer="two"),
             Prediction(sample_id="VizWiz_test_00000001", task="t", output="red")]
    write_submission("vqav2", preds[:1], samples[:1], tmp_path / "v.json")
    assert json.loads((tmp_path / "v.json").read_text()) == [{"answer": "two", "question_id": 4195880}]
    write_submission("vizwiz", preds[1:], samples[1:], tmp_path / "z.json")
    assert json.loads((tmp_path / "z.json").read_text()) == [{"answer": "red", "image": "VizWiz_test_00000001.jpg"}]
    write_submission("docvqa", preds[:1], samples[:1], tmp_path / "d.json")
    assert json.loads((tmp_path / "d.json").read_text()) == [{"answer": "two", "questionId": 4195880}]
    with pytest.raises(ValueError, match="unknown submission kind"):
        write_submission("nope", preds, samples, tmp_path / "x.json")


# ------------------------------------------------------------------ eval_mm's converted files


EVAL_MM_SPEC = """
task: evalmm_vqav2_val
dataset: {{format: jsonl, data_files: "{data}/eval_mm/vqav2_val.jsonl", image_root: "{data}"}}
fields: {{id: question_id, image: image, question: question, references: answer}}
prompts: {{base: "<img>{{image}}</img>{{question}} Answer:"}}
metrics: [{{name: {metric}}}]
"""


@pytest.mark.parametrize("metric", ["vqa_accuracy", "exact_match"])
def test_eval_mm_single_answer_file_is_never_a_silent_zero(tmp_path, metric):
    """eval_mm's vqav2_val.jsonl has one `answer` string per question: a one-element list, which VQA
    accuracy (leave-one-out over 10 human answers) cannot score -- an error, not 0.0 -- and exact match can."""
    from evalkit.metrics import get_metric
    from evalkit.metrics.base import MetricInputError
    from evalkit.registry import load_spec

    (tmp_path / "t.yaml").write_text(EVAL_MM_SPEC.format(data=DATA, metric=metric))
    spec = load_spec(tmp_path / "t.yaml")
    samples = load_samples(spec)
    assert [s.references for s in samples] == ["down", "watching", "picnic table"]
    preds = [Prediction(sample_id=s.id, task=spec.name, output=a, answer=a)
             for s, a in zip(samples, ["down", "Watching TV", "picnic table"])]
    if metric == "vqa_accuracy":
        with pytest.raises(MetricInputError, match="at most one reference answer"):
            get_metric(metric)(preds, samples)
    else:
        assert get_metric(metric)(preds, samples).aggregate[metric] == pytest.approx(2 / 3)


def test_caption_reference_string_is_one_caption():
    from evalkit.metrics import get_metric

    caption = "a man riding a wave on top of a surfboard"
    samples = [Sample(id=str(i), images=[], fields={}, references=r) for i, r in enumerate([caption, [caption]])]
    preds = [Prediction(sample_id=s.id, task="t", output=caption, answer=caption) for s in samples]
    per = get_metric("caption")(preds, samples, metrics=["CIDEr", "ROUGE_L"]).per_sample
    assert per[0] == per[1] and per[0]["ROUGE_L"] == pytest.approx(1.0)


@pytest.mark.parametrize("layout", ["Annotations/train.json", "train.json"])
def test_vizwiz_fewshot_reads_the_official_layout(tmp_path, layout):
    """The official Annotations.zip unpacks to vizwiz/Annotations/train.json; the flat layout still works."""
    root = tmp_path / "vizwiz"
    (root / layout).parent.mkdir(parents=True, exist_ok=True)
    (root / layout).write_bytes((DATA / "vizwiz" / "train.json").read_bytes())
    (root / "train").symlink_to(DATA / "vizwiz" / "train")
    pool = load_samples(registry().get("vizwiz_val"), str(tmp_path), split="train")
    assert pool and not any(s.error is not None for s in pool)
    assert pool[0].references[0] == "cereal" and pool[0].images[0].load().size


def test_vizwiz_annotations_missing_names_both_places(tmp_path):
    with pytest.raises(DatasetError, match="Annotations/train.json and .*vizwiz/train.json"):
        load_samples(registry().get("vizwiz_val"), str(tmp_path), split="train")


HUB_REFCOCO_SPEC = """
include: {tasks}/refcoco_{split}.yaml
task: refcoco_{split}_hub
dataset: {{format: refcoco_hub, path: lmms-lab-encoder/RefCOCO}}
"""


@pytest.mark.parametrize("split", ["val", "testA", "testB"])
def test_refcoco_hub_copy_gives_the_refer_route_samples_and_scores(tmp_path, split):
    """The hub copy (one row per object, expressions in `answer`, bbox [x,y,w,h], image embedded) and the
    refer files, made from the same objects: the same samples (one per expression, pixel boxes, image
    size) and the same scores for the same outputs."""
    from evalkit.metrics.score import score_task
    from evalkit.registry import load_spec

    (tmp_path / "hub.yaml").write_text(HUB_REFCOCO_SPEC.format(tasks=registry().get("refcoco_val").source.rsplit("/", 1)[0],
                                                               split=split))
    hub_spec, refer_spec = load_spec(tmp_path / "hub.yaml"), registry().get(f"refcoco_{split}")
    hub, refer = load_samples(hub_spec, str(DATA)), load_samples(refer_spec, str(DATA))
    assert len(hub) == len(refer) >= 2 and not any(s.error is not None for s in hub + refer)

    def view(s):
        return (s.fields["sentence"], s.references, s.metadata["width"], s.metadata["height"],
                s.images[0].load().tobytes())

    assert [view(s) for s in hub] == [view(s) for s in refer]
    outputs = ["(250,250),(750,750)</box>", "(0,0),(100,100)</box>"]
    scores = []
    for spec, samples in ((hub_spec, hub), (refer_spec, refer)):
        preds = [Prediction(sample_id=s.id, task=spec.name, output=o, answer=o) for s, o in zip(samples, outputs)]
        scored = score_task(spec, samples, preds)
        scores.append(([p.scores for p in preds], scored["metrics"]["grounding_accuracy"]["value"]))
    assert scores[0] == scores[1] and scores[0][1] == 0.5

"""The lmms-eval plugin (`--model evalkit_qwen_vl`): lmms-eval's own CLI on local-data tasks, and
the plugin class on hand-built lmms-eval Instances, both against evalkit's QwenVLAdapter on the
fixture checkpoint. Needs lmms-eval (the README's careful install; CI installs it)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_CKPT, checkout_env
from PIL import Image

from evalkit.models.qwen_vl.adapter import QwenVLAdapter
from evalkit.task import ImageRef, Request

try:
    from lmms_eval.api.instance import Instance
except ImportError as exc:  # every test below is reported skipped, with what is missing
    MISSING: str | None = (f"lmms-eval is not importable ({exc}): install it as the README's lmms-eval section "
                           "says (.ci/run does)")
else:
    MISSING = None
    from evalkit.integrations.lmms_eval import EvalkitQwenVL, parse_batch_size

pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

QUESTIONS = ["What color is it?", "Is it red?", "What is shown?", "Which colour?"]
COLORS = ["red", "green", "blue", "red"]  # rows 0 and 3 share an image
CHOICES = ["red", "green", "blue"]
MAX_NEW = 6


def png(color: str, size: tuple[int, int] = (32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def reference() -> QwenVLAdapter:
    """evalkit's own model, built apart from the plugin's."""
    return QwenVLAdapter.from_spec(str(TINY_CKPT), dtype="fp32", device="cpu")


def vqa_request(i: int, image: ImageRef, question: str, **kwargs) -> Request:
    return Request(f"q{i}", "ref", ["<img>", image, f"</img>{question} Answer:"], **kwargs)


# -- lmms-eval's CLI --------------------------------------------------------------------------
def write_tasks(root: Path) -> Path:
    """A parquet file with embedded image bytes and two task YAMLs reading it (generation and
    multiple choice), as lmms-eval's --include_path takes them."""
    import datasets

    features = datasets.Features(
        {"question": datasets.Value("string"), "answer": datasets.Value("string"), "image": datasets.Image()}
    )
    rows = {
        "question": QUESTIONS,
        "answer": COLORS,
        "image": [{"bytes": png(c), "path": None} for c in COLORS],
    }
    data = root / "data" / "test.parquet"
    data.parent.mkdir()
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(data))
    tasks = root / "tasks"
    tasks.mkdir()
    common = {
        "dataset_path": "parquet",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "doc_to_visual": "image",
        "doc_to_text": "{{question}} Answer:",
    }
    vqa = {
        "task": "evalkit_fixture_vqa",
        **common,
        "output_type": "generate_until",
        "doc_to_target": "answer",
        "generation_kwargs": {"max_new_tokens": MAX_NEW, "until": ["\n"]},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    }
    choice = {
        "task": "evalkit_fixture_choice",
        **common,
        "output_type": "multiple_choice",
        "doc_to_choice": CHOICES,
        "doc_to_target": "{{['red', 'green', 'blue'].index(answer)}}",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }
    for spec in (vqa, choice):
        (tasks / f"{spec['task']}.yaml").write_text(yaml.safe_dump(spec))
    return tasks


def run_lmms_eval(root: Path, ranks: int = 1) -> dict:
    """lmms-eval's CLI on the fixture tasks, as one process or under torchrun (gloo, on the CPU)."""
    tasks = write_tasks(root)
    out = root / "out"
    env = checkout_env(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(root / "hf-cache"),
                       CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    env = {k: v for k, v in env.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    launcher = [sys.executable]
    if ranks > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    cmd = [
        *launcher, "-m", "lmms_eval", "eval",
        "--model", "evalkit_qwen_vl",
        "--model_args", f"pretrained={TINY_CKPT},dtype=fp32",
        "--tasks", "evalkit_fixture_vqa,evalkit_fixture_choice",
        "--include_path", str(tasks),
        "--batch_size", "3",
        "--output_path", str(out),
        "--log_samples",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    log = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, log
    results = list(out.rglob("*_results.json"))
    assert len(results) == 1, f"no results file (lmms-eval exits 0 when a task fails):\n{log}"

    def samples(task: str) -> list[dict]:
        (path,) = out.rglob(f"*_samples_{task}.jsonl")
        return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda r: r["doc_id"])

    return {
        "results": json.loads(results[0].read_text()),
        "vqa": samples("evalkit_fixture_vqa"),
        "choice": samples("evalkit_fixture_choice"),
        "log": proc.stdout + proc.stderr,
    }


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> dict:
    return run_lmms_eval(tmp_path_factory.mktemp("lmms"))


def test_cli_generation_is_evalkits_engine(cli_run, reference):
    assert cli_run["results"]["n-samples"]["evalkit_fixture_vqa"]["effective"] == len(QUESTIONS)
    rows = cli_run["vqa"]
    assert [r["doc_id"] for r in rows] == list(range(len(QUESTIONS)))
    expected = reference.generate(
        [
            vqa_request(i, ImageRef.from_bytes(png(c)), q, max_new_tokens=MAX_NEW, stop=["\n"])
            for i, (q, c) in enumerate(zip(QUESTIONS, COLORS))
        ]
    )
    assert [r["filtered_resps"] for r in rows] == expected
    assert len(set(expected)) > 1  # the outputs depend on the image and question: a real comparison
    score = cli_run["results"]["results"]["evalkit_fixture_vqa"]["exact_match,none"]
    assert score == sum(o.strip() == a for o, a in zip(expected, COLORS)) / len(COLORS)


def test_cli_multiple_choice_is_scored_by_evalkits_loglikelihood(cli_run, reference):
    assert cli_run["results"]["n-samples"]["evalkit_fixture_choice"]["effective"] == len(QUESTIONS)
    rows = cli_run["choice"]
    expected = reference.loglikelihood(
        [
            vqa_request(i, ImageRef.from_bytes(png(c)), q, choices=[f" {x}" for x in CHOICES])
            for i, (q, c) in enumerate(zip(QUESTIONS, COLORS))
        ]
    )
    for row, scores in zip(rows, expected):
        logged = [float(loss) for loss, _ in row["filtered_resps"]]  # lmms-eval logs them as text
        assert logged == pytest.approx([-s.mean_logprob for s in scores], abs=1e-4)
    picks = [max(range(len(CHOICES)), key=lambda k: s[k].mean_logprob) for s in expected]
    accuracy = sum(CHOICES[p] == a for p, a in zip(picks, COLORS)) / len(COLORS)
    assert cli_run["results"]["results"]["evalkit_fixture_choice"]["acc,none"] == pytest.approx(accuracy)


def test_two_processes_shard_the_documents_and_give_the_same_results(cli_run, tmp_path):
    """Under torchrun (gloo, CPU) each process joins as its own rank, as lmms-eval's models do, so
    lmms-eval gives it every second document; the gathered samples and scores are the one-process ones."""
    two = run_lmms_eval(tmp_path, ranks=2)
    for rank in (0, 1):
        assert f"evalkit_qwen_vl: rank {rank} of 2" in two["log"]
    for task in ("vqa", "choice"):
        assert [r["doc_id"] for r in two[task]] == [r["doc_id"] for r in cli_run[task]]  # each once
        assert [r["filtered_resps"] for r in two[task]] == [r["filtered_resps"] for r in cli_run[task]]
    assert two["results"]["results"] == cli_run["results"]["results"]
    assert two["results"]["n-samples"] == cli_run["results"]["n-samples"]


# -- the plugin class on hand-built Instances ---------------------------------------------------
DOCS = [
    {"question": "What color is it?", "images": [png("red")]},
    {"question": "Compare them.", "images": [png("green"), png("blue", (20, 40))]},
    {"question": "Describe it.", "images": [png("blue")]},
]


def doc_images(doc: dict) -> list[Image.Image]:
    return [Image.open(io.BytesIO(b)) for b in doc["images"]]


def instance(kind: str, args: tuple, doc_id: int, idx: int = 0) -> Instance:
    return Instance(kind, args, idx, metadata={"task": "t", "doc_id": doc_id, "repeats": 1})


def reference_parts(doc: dict) -> list:
    """Qwen-VL's own multi-image layout, written out by hand."""
    images = [ImageRef.from_bytes(b) for b in doc["images"]]
    if len(images) == 1:
        return ["<img>", images[0], "</img>" + doc["question"]]
    parts: list = []
    for n, image in enumerate(images, 1):
        parts += [f"Picture {n}:<img>", image, "</img>\n"]
    return [*parts, doc["question"]]


@pytest.fixture(scope="module")
def lm() -> EvalkitQwenVL:
    model = EvalkitQwenVL(pretrained=str(TINY_CKPT), batch_size="2", dtype="fp32", device="cpu")
    model.task_dict = {"t": {"test": DOCS}}
    return model


def test_generate_until_matches_evalkit_generate(lm, reference):
    gen = {"max_new_tokens": 5, "until": ["\n\n"]}
    insts = [
        instance("generate_until", (d["question"], dict(gen), doc_images, i, "t", "test"), i)
        for i, d in enumerate(DOCS)
    ]
    expected = reference.generate(
        [
            Request(f"d{i}", "ref", reference_parts(d), max_new_tokens=5, stop=["\n\n"])
            for i, d in enumerate(DOCS)
        ]
    )
    assert lm.generate_until(insts) == expected
    assert all(len(lm.model.tokenizer.encode(t)) <= 5 for t in expected)


def test_generate_until_cuts_at_until_and_honours_max_new_tokens(lm, reference):
    doc = DOCS[0]
    free, two = reference.generate(
        [Request("d", "ref", reference_parts(doc), max_new_tokens=n) for n in (8, 2)]
    )
    assert free.startswith(two) and len(two) < len(free)
    stop = free[len(free) // 2 : len(free) // 2 + 2]  # a string the free run produces
    cut, short = lm.generate_until(
        [
            instance(
                "generate_until",
                (doc["question"], {"max_new_tokens": 8, "until": stop}, doc_images, 0, "t", "test"),
                0,
            ),
            instance(
                "generate_until", (doc["question"], {"max_new_tokens": 2}, doc_images, 0, "t", "test"), 0
            ),
        ]
    )
    assert cut == free[: free.find(stop)] != free
    assert short == two


def test_loglikelihood_matches_evalkit_and_reports_greedy(lm, reference):
    doc = DOCS[0]
    greedy = reference.generate([Request("d", "ref", reference_parts(doc), max_new_tokens=2)])[0]
    continuations = [greedy, " red", " green"]
    insts = [
        instance("loglikelihood", (doc["question"], c, doc_images, 0, "t", "test"), 0, idx=k)
        for k, c in enumerate(continuations)
    ]
    insts.append(instance("loglikelihood", ("", " red"), 0, idx=3))  # unconditional: no context, no image
    results = lm.loglikelihood(insts)
    (scores,) = reference.loglikelihood([Request("d", "ref", reference_parts(doc), choices=continuations)])
    # lmms-eval's models answer the mean token loss (its multiple_choice picks the argmin)
    assert [r[0] for r in results[:3]] == pytest.approx([-s.mean_logprob for s in scores], abs=1e-5)
    assert [r[1] for r in results[:3]] == [True, greedy.startswith(" red"), greedy.startswith(" green")]
    (unconditional,) = reference.loglikelihood([Request("u", "ref", ["<|endoftext|>"], choices=[" red"])])
    assert results[3][0] == pytest.approx(-unconditional[0].mean_logprob, abs=1e-5)
    assert all(isinstance(r, tuple) and isinstance(r[1], bool) for r in results)


def test_a_bad_sample_costs_only_its_own_answer(lm, reference):
    def video(doc: dict) -> list[str]:
        return ["clip.mp4"]

    gen = {"max_new_tokens": 4}
    good = instance("generate_until", (DOCS[2]["question"], gen, doc_images, 2, "t", "test"), 2)
    bad = instance("generate_until", ("Describe it.", gen, video, 0, "t", "test"), 0)
    answers = lm.generate_until([bad, good])
    expected = reference.generate([Request("d", "ref", reference_parts(DOCS[2]), max_new_tokens=4)])
    assert answers == ["", expected[0]]
    (score,) = lm.loglikelihood([instance("loglikelihood", ("Describe it.", " x", video, 0, "t", "test"), 0)])
    assert score == (float("inf"), False)


def test_multi_round_feeds_each_answer_to_the_next_round(lm, reference):
    seen: list[list[str]] = []

    def next_round(doc, previous_output, round_idx, previous_round_info):
        seen.append(list(previous_output))
        if round_idx == 2:
            return None, None, True, previous_output, None
        return doc_images(doc), f"You said {previous_output[-1]!r}. Again:", False, previous_output, None

    doc = DOCS[0]
    gen = {"max_new_tokens": 3}
    inst = instance(
        "generate_until_multi_round", (doc["question"], gen, doc_images, next_round, 0, "t", "test"), 0
    )
    (rounds,) = lm.generate_until_multi_round([inst])
    first = reference.generate([Request("d", "ref", reference_parts(doc), max_new_tokens=3)])[0]
    again = {**doc, "question": f"You said {first!r}. Again:"}
    second = reference.generate([Request("d", "ref", reference_parts(again), max_new_tokens=3)])[0]
    assert rounds == [first, second]
    assert seen == [[first], [first, second]]


def test_lmms_eval_resolves_the_entry_point_and_keeps_scores(lm):
    from lmms_eval.evaluator import unwrap_generation_output
    from lmms_eval.models import get_model

    assert get_model("evalkit_qwen_vl") is EvalkitQwenVL
    assert unwrap_generation_output((-1.5, False)) == ((-1.5, False), None)  # not "(-1.5, False)"
    assert unwrap_generation_output("text") == ("text", None)


def test_batch_size_from_lmms_eval():
    assert parse_batch_size(1) == 1 and parse_batch_size("16") == 16
    assert parse_batch_size("auto") == "auto" and parse_batch_size("auto:4") == "auto"
    with pytest.raises(ValueError, match="batch size must be"):
        parse_batch_size("0")

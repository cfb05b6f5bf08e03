"""`evalkit report`: a self-contained page with the metrics table, samples, drawn boxes and few-shot curves,
checked in headless Chromium (DOM and a screenshot) where Chromium is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageStat
from run_fixtures import FakeTask, write_run

from evalkit.cli import main
from evalkit.registry import Registry
from evalkit.results.report import build_context, curve_svg, render
from evalkit.results.runs import open_run

GT = "#2da44e"
PRED = "#ff4d6d"
# (object box in pixels, Qwen-VL output on the 0..999 grid, IoU-correct?)
GROUNDING = [
    ([60, 50, 200, 180], "(150,166),(500,600)</box>", 1.0),
    ([220, 120, 360, 270], "(100,100),(300,350)</box>", 0.0),
]


def grounding_task(root: Path) -> Path:
    """A tiny grounding task in a user tasks dir: images with a drawn object, its gt box, jsonl rows."""
    (root / "images").mkdir(parents=True)
    rows = []
    for i, (box, _, _) in enumerate(GROUNDING):
        image = Image.new("RGB", (400, 300), (200, 215, 230))
        draw = ImageDraw.Draw(image)
        draw.rectangle([0, 220, 400, 300], fill=(120, 160, 100))
        draw.ellipse(box, fill=(240, 170, 40) if i == 0 else (70, 90, 200))
        image.save(root / "images" / f"{i}.png")
        rows.append({"id": f"g{i}", "image": f"{i}.png", "sentence": ["the yellow ball", "the blue ball"][i],
                     "bbox": box, "width": 400, "height": 300})
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "ground_t.yaml").write_text(
        "task: ground_t\ngroups: [grounding]\n"
        "dataset: {format: jsonl, data_files: data.jsonl, image_root: images}\n"
        "fields: {id: id, image: image, sentence: sentence, references: bbox, meta.width: width, meta.height: height}\n"
        'prompts: {base: "<img>{image}</img><ref>{sentence}</ref><box>"}\n'
        "postprocess: []\nmetrics: [{name: grounding_accuracy}]\n")
    return root


def fixture_tasks(tasks_dir: Path) -> list[FakeTask]:
    """vqav2_mini (bundled data, so thumbnails) at 0/4/8 shots, the grounding task, a task with no data."""
    registry = Registry(extra_dirs=[tasks_dir])
    vqa_spec = registry.get("vqav2_mini")
    ids = [str(1001 + i) for i in range(6)]
    vqa_scores = [1.0, 0.0, 1.0, 0.3, 1.0, 0.0]
    outputs = ["red", "three", "yes", "violet", "3", "no"]
    refs = [["red"] * 9 + ["maroon"], ["two"] * 10, ["yes"] * 10, ["purple"] * 7 + ["violet"] * 3, ["3"] * 10, ["yes"] * 10]
    common = {"spec_hash": vqa_spec.spec_hash(), "groups": ["vqa"]}
    tasks = [
        FakeTask("vqav2_mini", vqa_scores, metric="vqa_accuracy", ids=ids, outputs=outputs, references=refs, entry=common),
        FakeTask("vqav2_mini", [1.0, 1.0, 1.0, 0.3, 1.0, 0.0], metric="vqa_accuracy", shots=4, ids=ids, outputs=outputs,
                 references=refs, entry=common),
        FakeTask("vqav2_mini", [1.0, 1.0, 1.0, 1.0, 1.0, 0.0], metric="vqa_accuracy", shots=8, ids=ids, outputs=outputs,
                 references=refs, entry=common),
        FakeTask("ground_t", [s for _, _, s in GROUNDING], metric="grounding_accuracy", groups=["grounding"],
                 ids=["g0", "g1"], outputs=[o for _, o, _ in GROUNDING], references=[b for b, _, _ in GROUNDING],
                 entry={"info": {"grounding_accuracy": {"parser": "qwen"}},
                        "spec_hash": registry.get("ground_t").spec_hash()}),
        FakeTask("elsewhere_t", [1.0, 0.0]),  # not in any registry: no images, and the page says so
    ]
    return tasks


@pytest.fixture
def run_dir(tmp_path) -> tuple[Path, Path]:
    tasks_dir = grounding_task(tmp_path / "tasks")
    return write_run(tmp_path / "run", fixture_tasks(tasks_dir)), tasks_dir


def test_context_has_boxes_curves_and_notes(run_dir):
    run, tasks_dir = run_dir
    ctx = build_context(open_run(run), n_samples=3, tasks_dir=[str(tasks_dir)])
    views = {t.key: t for t in ctx["tasks"]}
    ground = views["ground_t"]
    assert ground.grounding and [s.sample_id for s in ground.worst] == ["g1", "g0"]  # wrong box first
    assert ground.random == []  # two samples: shown whole, once
    g1 = ground.worst[0]
    assert g1.image.startswith("data:image/jpeg;base64,") and (g1.width, g1.height) == (400, 300)
    gt, pred = g1.boxes
    assert (gt.kind, gt.x1, gt.y2) == ("gt", 220, 270)
    assert pred.kind == "pred" and pred.x1 == pytest.approx(100 / 999 * 400, abs=1e-3)
    vqa = views["vqav2_mini"]
    assert vqa.worst[0].score == 0.0 and vqa.worst[0].image and "question: " in vqa.worst[0].question
    assert vqa.notes == [] and ground.notes == [] and len(vqa.random) == 3
    again = build_context(open_run(run), n_samples=3, tasks_dir=[str(tasks_dir)])
    assert [s.sample_id for s in vqa.random] == [s.sample_id for s in again["tasks"][1].random]  # seeded
    assert "purple ×7, violet ×3" in [s.references for s in vqa.worst]
    assert any("images not shown" in n for n in views["elsewhere_t"].notes)
    assert [t.key for t in ctx["tasks"]] == ["elsewhere_t", "vqav2_mini", "vqav2_mini_4shot", "vqav2_mini_8shot",
                                             "ground_t"]  # paper order: general VQA, then grounding
    assert [c.task for c in ctx["curves"]] == ["vqav2_mini"]
    assert ctx["metrics"][0].family == "General VQA"


def test_curve_svg_is_valid_markup():
    svg = curve_svg([(0, 50.0, (45.0, 55.0)), (4, 60.0, None), (8, 58.5, (55.0, 62.0))], "vqa_accuracy")
    assert svg.startswith("<svg") and svg.count("<circle") == 3 and "<polyline" in svg
    import xml.etree.ElementTree as ET

    ET.fromstring(svg)  # well-formed


def test_cli_writes_self_contained_page(run_dir, tmp_path, capsys):
    run, tasks_dir = run_dir
    out = tmp_path / "report.html"
    assert main(["report", str(run), "-o", str(out), "--tasks-dir", str(tasks_dir), "--samples", "2"]) == 0
    html = out.read_text()
    assert 'id="metrics-table"' in html and "ground_t" in html and "<polyline" in html
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # nothing fetched from outside the file
    assert main(["report", str(tmp_path / "nope")]) == 2


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium(args: list[str], profile: Path) -> str:
    done = subprocess.run([CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_page_renders_in_chromium(tmp_path):
    # a vqa task and the grounding task, two samples each: all inside the 2000 px screenshot
    tasks_dir = grounding_task(tmp_path / "tasks")
    run = write_run(tmp_path / "run", [t for t in fixture_tasks(tasks_dir) if t.key in ("vqav2_mini", "ground_t")])
    page = tmp_path / "report.html"
    page.write_text(render(build_context(open_run(run), n_samples=2, tasks_dir=[str(tasks_dir)])))
    dom = chromium(["--dump-dom", page.as_uri()], tmp_path / "profile")
    assert '<table class="metrics" id="metrics-table">' in dom
    table = dom.split('id="metrics-table"')[1].split("</table>")[0]
    assert "vqav2_mini" in table and "ground_t" in table and "55.00" in table and "50.00" in table
    assert dom.count('class="box-pred"') == 2 and dom.count('class="box-gt"') == 2  # 2 samples: shown once

    shot = tmp_path / "report.png"
    chromium([f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", page.as_uri()], tmp_path / "profile")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    assert len(image.getcolors(maxcolors=1 << 20) or []) > 50 and max(ImageStat.Stat(image).var) > 100  # not blank
    counts = dict((c, n) for n, c in image.getcolors(maxcolors=1 << 20))
    for colour in (GT, PRED):  # the boxes are drawn, not just present in the DOM
        rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        assert counts.get(rgb, 0) > 300, f"too few {colour} pixels: boxes not visible"


def demo_refcoco_run(tmp_path: Path) -> Path:
    """`evalkit run` on demo_refcoco (a grounding task of the "demo" group whose outputs hold no `<box>`):
    replayed predictions, the gold box for even samples and a wrong one for odd samples."""
    from evalkit.data import load_samples

    samples = load_samples(Registry().get("demo_refcoco"))[:4]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"sample_id": s.id, "output": s.fields["box_answer"] if i % 2 == 0
                                         else "(0,0),(100,100)</box>"}) + "\n" for i, s in enumerate(samples)))
    out = tmp_path / "run"
    assert main(["run", "--model", f"replay:{preds}", "--tasks", "demo_refcoco", "--limit", "4", "-o", str(out)]) == 0
    return out


def test_demo_refcoco_report_draws_both_boxes_in_one_space(tmp_path, capsys):
    from evalkit.data import load_samples

    run = demo_refcoco_run(tmp_path)
    gold = {s.id: s for s in load_samples(Registry().get("demo_refcoco"))[:4]}
    ctx = build_context(open_run(run), n_samples=4)
    view = ctx["tasks"][0]
    assert view.key == "demo_refcoco" and view.grounding  # from its metric, though not in the grounding group
    for card in view.worst:
        sample = gold[card.sample_id]
        assert (card.width, card.height) == (sample.metadata["width"], sample.metadata["height"])
        assert card.image is not None
        boxes = {b.kind: [b.x1, b.y1, b.x2, b.y2] for b in card.boxes}
        assert boxes["gt"] == [float(v) for v in sample.references]  # pixels of the image the viewBox spans
        assert all(0 <= v <= max(card.width, card.height) for v in boxes["pred"])
        if card.score == 1.0:  # the gold box replayed: drawn where the gold box is, within the 0..999 grid's rounding
            assert max(abs(a - b) for a, b in zip(boxes["pred"], boxes["gt"])) <= 1
        assert card.question == f"sentence: {sample.fields['sentence']}"  # the input, not the gold box_answer
        assert "box" not in card.question
    html = render(ctx)
    badges = re.findall(r'<span class="badge (\w+)">([^<]*)</span>', html)
    assert sorted(set(badges)) == [("bad", "0"), ("good", "100")]  # points, as the table (50.00) is
    assert html.count('class="box-gt"') == 4 and html.count('class="box-pred"') == 4


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_demo_refcoco_cards_have_drawn_boxes_in_chromium(tmp_path, capsys):
    run = demo_refcoco_run(tmp_path)
    page = tmp_path / "report.html"
    assert main(["report", str(run), "-o", str(page), "--samples", "4"]) == 0
    dom = chromium(["--dump-dom", page.as_uri()], tmp_path / "profile")
    cards = dom.split('class="card"')[1:]
    assert len(cards) == 4
    for card in cards:  # each grounding card: the thumbnail and both boxes inside one svg
        svg = card.split("<svg", 1)[1].split("</svg>", 1)[0]
        assert "<image" in svg and 'class="box-gt"' in svg and 'class="box-pred"' in svg
    shot = tmp_path / "report.png"
    chromium([f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", page.as_uri()], tmp_path / "profile")
    counts = dict((c, n) for n, c in Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20))
    for colour in (GT, PRED):
        rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        assert counts.get(rgb, 0) > 300, f"too few {colour} pixels: boxes not visible"

"""A wheel works like a checkout: build it, install it into a fresh venv outside the checkout, and
run the commands a user runs there, from a folder outside the checkout, with the checkout off the
path. Nothing is downloaded: the venv sees this interpreter's packages (--system-site-packages)
and the wheel is installed alone (--no-deps --no-index). The wheel must be the evalkit that runs,
even where an editable install of some checkout is on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from evalkit.registry import Registry

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def source_files() -> list[str]:
    """The files a build may use: the working tree's tracked and not-ignored files, tests aside."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    return [f for f in listed if f and not f.startswith("tests/") and (REPO / f).is_file()]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> dict:
    """A venv with the wheel built from this checkout installed; where to run commands, and how."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed (the source files are `git ls-files`)")
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    for f in source_files():  # a copy, so the build writes nothing into the checkout
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, src / f)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(root / "dist"), str(src)], cwd=root, env=env, check=True, capture_output=True)
    (wheel,) = (root / "dist").glob("evalkit-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(root / "venv")],
                   check=True)
    bin_dir = root / "venv" / "bin"
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--force-reinstall", str(wheel)], cwd=root, env=env, check=True, capture_output=True)
    work = root / "work"  # outside the checkout: no tasks/, results/ or benchmarks/ here
    work.mkdir()
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    return {"root": root, "wheel": wheel, "bin": bin_dir, "work": work, "env": env}


def run(venv: dict, *argv: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(venv["bin"] / argv[0]), *argv[1:]], cwd=venv["work"], env=venv["env"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(argv)}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_the_wheel_carries_the_run_time_files(venv):
    names = set(zipfile.ZipFile(venv["wheel"]).namelist())
    specs = {f"evalkit/_repo/{p.relative_to(REPO)}" for p in (REPO / "tasks").rglob("*.yaml")}
    assert specs and specs <= names
    for f in ("results/paper.json", "benchmarks/configs/small_cpu.json", "benchmarks/configs/qwen.tiktoken"):
        assert f"evalkit/_repo/{f}" in names
    assert "evalkit/results/templates/report.html.j2" in names and "evalkit/demo/assets/model/model.safetensors" in names
    assert not any(n.startswith(("tests/", "evalkit/_repo/tests")) for n in names)


def test_the_installed_wheel_is_the_evalkit_that_runs(venv):
    probe = "import evalkit, evalkit.registry as r; print(evalkit.__file__); print(r.REPO_TASKS_DIR)"
    out = run(venv, "python", "-c", probe).stdout.split()
    site = venv["root"] / "venv"
    assert Path(out[0]).is_relative_to(site) and Path(out[1]).is_relative_to(site)
    assert not Path(out[1]).is_relative_to(REPO)


def test_tasks(venv):
    out = run(venv, "evalkit", "tasks").stdout
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert set(Registry().tasks) <= listed  # the checkout's tasks (this test runs beside them)


def test_the_demo_run_prints_its_table_and_matches_the_baseline(venv):
    out = run(venv, "evalkit", "run").stdout
    assert "running the embedded default" in out
    for task, metric in (("demo_caption", "CIDEr"), ("demo_vqa", "vqa_accuracy"), ("demo_textvqa", "vqa_accuracy"),
                         ("demo_refcoco", "grounding_accuracy")):
        assert any(line.split()[:2] == [task, metric] for line in out.splitlines()), out
    assert (venv["work"] / "runs" / "demo" / "run.json").is_file()
    run(venv, "evalkit", "check", "runs/demo", "--baseline", str(REPO / "results" / "baselines" / "demo.json"))


def test_a_hub_task_from_a_local_copy_and_compare_with_the_paper(venv):
    run(venv, "evalkit", "run", "--model", f"replay:{FIXTURES / 'predictions'}", "--tasks", "okvqa_val",
        "--data-dir", str(FIXTURES / "data"), "-o", "runs/okvqa", "--no-progress")
    result = json.loads((venv["work"] / "runs" / "okvqa" / "run.json").read_text())["tasks"]["okvqa_val"]
    assert result["n_errors"] == 0 and result["metrics"]["vqa_accuracy"]["value"] is not None
    out = run(venv, "evalkit", "compare", "runs/okvqa", "--paper").stdout
    header, _, row = out.splitlines()[:3]
    assert "Qwen-VL (paper)" in header and "okvqa_val" in row and "58.60" in row  # paper.json's OK-VQA number


def test_bench_finds_the_shipped_config(venv):
    out = run(venv, "evalkit", "bench", "--config", "benchmarks/configs/small_cpu.json", "--dry-run").stdout
    assert "total 0.17B parameters" in out
    assert str(venv["root"] / "venv") in out  # the wheel's copy: there is no benchmarks/ in this folder


def test_the_python_api(venv):
    out = run(venv, "python", "-c", "import evalkit; t = evalkit.list_tasks(); print(len(t), t.set_index('task').paper['okvqa_val'])")
    n, paper = out.stdout.split()
    assert int(n) == len(Registry().tasks)
    assert float(paper) == 58.6

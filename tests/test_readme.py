"""Every command in README.md runs, exactly as written: the commands are read from the README's
code blocks (```bash lines, the GitHub workflow's `run:` steps, ```python examples), so the README
and the tests cannot drift. A short explicit list (SKIPPED) needs what a test cannot have: a real
checkpoint, a dataset download, GPUs, package installs, or the test suite itself.

The commands run in README order in one scratch folder that looks like the top of a checkout
(a copy of results/, which they read and `--update-baseline` writes) and is a git repository
with the checkout's .gitignore: everything they write there must be ignored. `evalkit` and
`python` are this interpreter with the checkout first on the path, so the code under test is
the code beside this file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import checkout_env

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# command (without its trailing comment) or its start -> why it does not run in the tests
SKIPPED = {
    'pip install torch==2.13.0 && pip install -e ".[dev]"':
        "installs packages (.ci/run runs it); the `evalkit run -o runs/ci` below is the same demo run",
    "python -m pytest -q": "the test suite itself",
    "python -m pytest -m gpu -q": "the test suite itself (its CUDA tests, tests/test_gpu.py)",
    "python benchmarks/mutation.py": "mutmut over a scope, minutes to an hour; not in CI (tests/README.md records the scores)",
    "evalkit run --model qwen-vl:/ckpt/Qwen-VL": "a real checkpoint",
    "evalkit run --model replay:preds.json --tasks okvqa_val":
        "predictions made elsewhere and the OK-VQA download (tests/test_tasks_catalog.py replays every task on fixtures)",
    "evalkit bench --model qwen-vl:/ckpt/Qwen-VL": "a real checkpoint",
    "evalkit bench --config benchmarks/configs/small_cpu.json":
        "the recorded CPU benchmark, about a minute of 2 cores; the tiny.json line runs the same code in seconds",
    "torchrun --nproc-per-node 8": "8 GPUs and a real checkpoint (tests/test_distributed.py runs torchrun on CPU)",
    "torchrun --nnodes 2": "two GPU nodes",
    "python -m lmms_eval eval": "a real checkpoint (tests/test_lmms_eval.py runs lmms-eval on the tiny fixture)",
    "pip install --no-deps lmms-eval==0.7.3": "installs packages: .ci/run runs this recipe",
    "lmms_reqs=$(mktemp)": "part of the install recipe",
    'python -c "import importlib.metadata': "part of the install recipe (the same line as .ci/run's, tested below)",
    'pip install "filelock<4" -r "$lmms_reqs"': "part of the install recipe",
}
# what a command must print (besides exiting 0)
EXPECTED = {
    "evalkit tasks": ["vqav2_val", "refcocog_test", "demo_caption", "tasks; groups:"],
    "evalkit bench --config benchmarks/configs/qwen_vl_real.json --dry-run": ["total 9.66B parameters"],
    "evalkit bench --config benchmarks/configs/tiny.json": ["generate() batch 1", "speedup:", "outputs equal"],
    "evalkit run -o runs/ci": [*(f"demo_{t}" for t in ("caption", "vqa", "textvqa", "refcoco")), "runs/ci/run.json"],
    "import evalkit": ["refcocog_test", "vqa_accuracy", "api delta", "| demo_vqa"],
}
IN_CHECKOUT = {"ruff check ."}  # lints the checkout itself


@dataclass(frozen=True)
class Command:
    text: str  # as written: a line (with its continuations) or a workflow step; a python example whole
    kind: str  # "bash" or "python"

    @property
    def key(self) -> str:
        """What SKIPPED and EXPECTED name: a command on one line without its trailing comment; a
        python example's first line."""
        if self.kind == "python":
            return self.text.strip().splitlines()[0]
        return re.sub(r"\s+#\s.*$", "", " ".join(self.text.replace("\\\n", " ").split()))

    def skipped(self) -> str | None:
        return next((why for start, why in SKIPPED.items() if self.key.startswith(start)), None)


def readme_commands(text: str) -> list[Command]:
    """The README's commands in order: each line of a ```bash block (continuations joined), each
    `run:` step of a GitHub workflow in a ```yaml block, each ```python block as one program."""
    out: list[Command] = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S):
        if lang == "bash":
            pending = ""
            for line in body.split("\n"):
                pending += line if not pending else "\n" + line
                if line.endswith("\\"):
                    continue
                if pending.strip() and not pending.lstrip().startswith("#"):
                    out.append(Command(pending.strip(), "bash"))
                pending = ""
        elif lang == "yaml":
            data = yaml.safe_load(body)
            for job in (data.get("jobs") or {}).values() if isinstance(data, dict) else []:
                out += [Command(step["run"].strip(), "bash") for step in job.get("steps", []) if "run" in step]
        elif lang == "python":
            out.append(Command(body, "python"))
    return out


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))
RUN = [c for c in COMMANDS if c.skipped() is None]


def test_the_readme_has_commands_and_a_short_skip_list():
    assert len(RUN) >= 10, [c.key for c in RUN]
    assert len(SKIPPED) <= 15
    for start in SKIPPED:  # a stale entry: the README changed
        assert any(c.key.startswith(start) for c in COMMANDS), f"SKIPPED entry {start!r} matches no README command"
    for prefix in EXPECTED:
        assert any(c.key.startswith(prefix) for c in RUN), f"EXPECTED entry {prefix!r} matches no command that runs"


@dataclass
class Ran:
    results: dict[Command, subprocess.CompletedProcess]
    seconds: dict[Command, float]
    work: Path  # the scratch folder the commands ran in
    summary: Path  # $GITHUB_STEP_SUMMARY


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> Ran:
    """Every command that runs, in README order, in one scratch folder; their results by command."""
    work = tmp_path_factory.mktemp("readme")
    aside = tmp_path_factory.mktemp("readme-aside")  # shims, python programs, the step summary
    shutil.copytree(REPO / "results", work / "results")
    shutil.copy(REPO / ".gitignore", work / ".gitignore")
    for name, argv in (("evalkit", f'"{sys.executable}" -m evalkit'), ("python", f'"{sys.executable}"')):
        shim = aside / "bin" / name
        shim.parent.mkdir(exist_ok=True)
        shim.write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
        shim.chmod(0o755)
    env = checkout_env(GITHUB_STEP_SUMMARY=str(aside / "summary.md"),
                       PATH=os.pathsep.join([str(aside / "bin"), str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    results: dict[Command, subprocess.CompletedProcess] = {}
    seconds: dict[Command, float] = {}
    for i, cmd in enumerate(RUN):
        cwd = REPO if cmd.key in IN_CHECKOUT else work
        if cmd.kind == "python":
            program = aside / f"example_{i}.py"
            program.write_text(cmd.text)
            argv = [sys.executable, str(program)]
        else:
            argv = ["bash", "-c", cmd.text]
        started = time.perf_counter()
        results[cmd] = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        seconds[cmd] = time.perf_counter() - started
    return Ran(results, seconds, work, aside / "summary.md")


@pytest.mark.parametrize("cmd", RUN, ids=lambda c: c.key[:60])
def test_readme_command_runs(cmd, ran):
    done = ran.results[cmd]
    print(f"{ran.seconds[cmd]:.1f}s: {cmd.key}")
    assert done.returncode == 0, f"{cmd.text}\nexit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    for prefix, wanted in EXPECTED.items():
        if cmd.key.startswith(prefix):
            for text in wanted:
                assert text in done.stdout, f"{cmd.key}: {text!r} not printed\n{done.stdout[-3000:]}"


def test_the_ci_example_wrote_its_report_and_summary(ran):
    assert "<html" in (ran.work / "report.html").read_text(encoding="utf-8").lower()
    summary = ran.summary.read_text(encoding="utf-8")
    assert "| demo_caption" in summary and "deltas vs demo" in summary


def test_everything_the_commands_write_is_gitignored(ran):
    """The scratch folder, a git repository with the checkout's .gitignore, has no untracked file
    beyond the copies put there: run folders and reports are ignored."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    work = ran.work
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=work,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    untracked = {line[3:] for line in status if line.startswith("??")}
    copied = {".gitignore"} | {str(p.relative_to(work)) for p in (work / "results").rglob("*") if p.is_file()}
    assert untracked - copied == set()
    assert (work / "runs" / "ci" / "run.json").is_file() and (work / "runs" / "api" / "run.json").is_file()


def test_the_lmms_recipe_is_what_ci_runs_and_writes_outside_the_repo():
    """The README's lmms-eval install recipe cannot run in a test (it installs packages); .ci/run
    runs the same requirements line, and neither writes its requirements file into the checkout."""
    program = re.compile(r'python3? -c "(import importlib\.metadata[^\n]*?)" > "\$lmms_reqs"')
    readme, ci = program.findall(README.read_text(encoding="utf-8")), program.findall((REPO / ".ci" / "run").read_text())
    assert len(readme) == 1 and readme == ci
    for text in (README.read_text(encoding="utf-8"), (REPO / ".ci" / "run").read_text()):
        assert "lmms_reqs=$(mktemp)" in text and "lmms-reqs.txt" not in text

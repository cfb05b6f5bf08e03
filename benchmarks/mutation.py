"""Mutation score of the number-deciding code (metrics, statistics, the comparison and the gate).

Not run in CI (minutes per scope). Each scope mutates a few modules with mutmut (3.x, `pip install
mutmut`) and runs only the fast tests that cover them, in a throwaway copy of the checkout, so the
working tree is never touched and several scopes can be measured one after another:

    python benchmarks/mutation.py metrics          # one scope
    python benchmarks/mutation.py --list           # the scopes
    python benchmarks/mutation.py stats --keep     # keep the copy to inspect survivors

It prints mutmut's summary and writes benchmarks/results/mutation_<scope>.survivors.txt: the diff of each mutant
no test killed (survived, or no test covers it). The recorded scores and why each survivor is equivalent or was killed
are in tests/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# scope: (modules to mutate, the tests that cover them)
SCOPES: dict[str, tuple[list[str], list[str]]] = {
    "metrics": (
        ["evalkit/metrics/vqa.py", "evalkit/metrics/anls.py", "evalkit/metrics/relaxed.py",
         "evalkit/metrics/exact.py", "evalkit/metrics/choice.py", "evalkit/metrics/base.py"],
        ["tests/test_metrics_vqa.py", "tests/test_metrics_text.py", "tests/test_metrics_choice.py",
         "tests/test_metrics_boundaries.py"],
    ),
    "grounding": (
        ["evalkit/metrics/grounding.py"],
        ["tests/test_metrics_grounding.py", "tests/test_metrics_boundaries.py"],
    ),
    "stats": (
        ["evalkit/metrics/stats.py"],
        ["tests/test_metrics_stats.py", "tests/test_metrics_boundaries.py"],
    ),
    "caption": (  # starts Java (PTB tokenizer, METEOR): the slowest scope
        ["evalkit/metrics/caption.py"],
        ["tests/test_metrics_caption.py"],
    ),
    "gate": (
        ["evalkit/results/check.py", "evalkit/results/compare.py", "evalkit/results/significance.py"],
        ["tests/test_check.py", "tests/test_compare.py", "tests/test_gate_boundaries.py"],
    ),
}


# Every mutant's status and, for those no test killed, its diff (mutmut's own `results` and `show`, in one
# process: `mutmut show` per survivor costs a Python start each).
_LIST_MUTANTS = """
from mutmut.__main__ import SourceFileMutationData, get_diff_for_mutant, status_by_exit_code, walk_mutatable_files
for path in walk_mutatable_files():
    data = SourceFileMutationData(path=path)
    data.load()
    for name, code in data.exit_code_by_key.items():
        status = status_by_exit_code[code]
        diff = "" if status in ("killed", "timeout") else get_diff_for_mutant(name, path=path)
        print(f"{status}\\n# {name}: {status}\\n{diff}\\n", end="\\0")
"""


def copy_checkout(dest: Path) -> None:
    """Tracked and untracked-but-not-ignored files, as git sees them (no caches, no runs)."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def write_config(dest: Path, modules: list[str], tests: list[str]) -> None:
    """mutmut reads [tool.mutmut] from pyproject.toml (absent here) or [mutmut] from setup.cfg."""
    lines = ["[mutmut]", "source_paths=evalkit", "only_mutate="]
    lines += [f"    {m}" for m in modules]
    lines += ["pytest_add_cli_args_test_selection="] + [f"    {t}" for t in tests if (dest / t).exists()]
    lines += ["also_copy=", "    results/", "    tasks/", "    README.md"]  # what tests read beside evalkit/
    lines += ["pytest_add_cli_args=", "    -p", "    no:cacheprovider", "    -q"]
    (dest / "setup.cfg").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scope", nargs="?", choices=sorted(SCOPES))
    parser.add_argument("--list", action="store_true", help="print the scopes and exit")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    parser.add_argument("--max-children", type=int, default=1, help="parallel mutant runs (default 1)")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="run only the mutants the scope's last survivors file lists (the source must be "
                             "unchanged, so the mutants are numbered alike); the others count as killed before")
    args = parser.parse_args()
    if args.list or not args.scope:
        for name, (modules, tests) in SCOPES.items():
            print(f"{name}: mutate {' '.join(modules)}; tests {' '.join(tests)}")
        return 0
    modules, tests = SCOPES[args.scope]
    work = Path(tempfile.mkdtemp(prefix=f"evalkit-mutmut-{args.scope}-"))
    try:
        copy_checkout(work)
        write_config(work, modules, tests)
        env = {**os.environ, "PYTHONPATH": str(work)}
        report = REPO / "benchmarks" / "results" / f"mutation_{args.scope}.survivors.txt"
        only = []
        if args.rerun_survivors:
            only = [line[2:].split(":")[0] for line in report.read_text().splitlines() if line.startswith("# ")]
        subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children), *only],
                       cwd=work, env=env, check=False)
        listing = subprocess.run([sys.executable, "-c", _LIST_MUTANTS], cwd=work, env=env, capture_output=True,
                                 text=True, check=True).stdout
        counts: dict[str, int] = {}
        diffs = []
        rerun = set(only)
        for block in listing.split("\0"):
            if not block.strip():
                continue
            status, diff = block.split("\n", 1)
            if rerun and diff.split("\n", 1)[0][2:].split(":")[0] not in rerun:
                status = "killed"  # killed in the run that wrote the survivors file
            counts[status] = counts.get(status, 0) + 1
            if status not in ("killed", "timeout"):
                diffs.append(diff)
        report.write_text("\n".join(diffs))
        total = sum(counts.values())
        killed = counts.get("killed", 0) + counts.get("timeout", 0)
        print(f"{args.scope}: {total} mutants: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        print(f"{args.scope}: killed {killed}/{total} = {killed / max(total, 1):.1%}; survivors in {report}")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

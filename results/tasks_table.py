"""Writes the README's task table (between the tasks-table markers) from the task specs and paper.json.

The table is generated so it cannot drift from the specs: `python results/tasks_table.py` rewrites
it, and tests/test_tasks_catalog.py fails when the README holds a stale copy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- tasks-table:start -->", "<!-- tasks-table:end -->"
METRIC_NAMES = {
    "caption": "CIDEr", "vqa_accuracy": "VQA accuracy", "anls": "ANLS", "relaxed_accuracy": "relaxed accuracy",
    "exact_match": "exact match", "choice_accuracy": "accuracy (log-likelihood)",
    "grounding_accuracy": "Acc@IoU≥0.5",
    "mme_score": "MME score (calculation.py)", "seed_accuracy": "Acc@1 (log-likelihood)",
    "mmbench": "CircularEval (log-likelihood)",
}
CATALOG_GROUPS = {"captioning", "vqa", "textvqa", "grounding", "qwen_vl_paper", "qwen_vl_chat_paper", "mme", "seedbench",
                  "mmbench", "touchstone"}


def paper_numbers(model: str = "Qwen-VL") -> dict[str, float]:
    return json.loads((ROOT / "results" / "paper.json").read_text())["models"][model]


def _number(numbers: dict[str, float], name: str, groups: list[str]) -> str:
    """The task's published number, or its group's (chartqa_test: the mean the paper reports) marked as such."""
    if name in numbers:
        return str(numbers[name])
    group = next((g for g in groups if g in numbers), None)
    return f"{numbers[group]} ({group})" if group else ""


def table() -> str:
    from evalkit.registry import Registry

    reg = Registry()
    paper, four_shot, chat = paper_numbers(), paper_numbers("Qwen-VL 4-shot"), paper_numbers("Qwen-VL-Chat")
    rows = ["| task | dataset | split | metric | Qwen-VL (paper) | 4-shot (paper) | Qwen-VL-Chat (paper) |",
            "|---|---|---|---|---|---|---|"]
    for name in sorted(n for n, s in reg.tasks.items() if CATALOG_GROUPS & set(s.groups)):
        spec = reg.get(name)
        ds = spec.dataset
        where = ds.path if ds.format in ("hf", "hub", "seed_hub") else f"{ds.format} files"
        if ds.name:
            where += f" ({ds.name})"
        note = " (submission)" if spec.submission else ""
        variant = next((m.options["variant"] for m in spec.metrics if "variant" in m.options), None)
        metric = METRIC_NAMES.get(spec.primary_metric, spec.primary_metric) + (f" ({variant})" if variant else "")
        metric = metric or "GPT-4 judge, offline"
        rows.append(f"| `{name}` | {where} | {ds.split} | {metric + note} | {_number(paper, name, spec.groups)} "
                    f"| {four_shot.get(name, '')} | {_number(chat, name, spec.groups)} |")
    return "\n".join(rows)


def render(readme: str) -> str:
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{table()}\n{END}{tail}"


def main() -> int:
    text = README.read_text(encoding="utf-8") if README.exists() else f"# evalkit\n\n## Tasks\n\n{START}\n{END}\n"
    if START not in text:
        text += f"\n## Tasks\n\n{START}\n{END}\n"
    README.write_text(render(text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`mme_files`: MME in the layout Qwen-VL's eval_mm/mme scripts read.

MME's eval_tool ships one question file per subtask, `Your_Results/<subtask>.txt`, each line
`image<TAB>question<TAB>answer` and the two questions of an image on consecutive lines;
eval_mm/mme/get_images.py gathers the images as `images/<subtask>/<image>` (from
MME_Benchmark_release, where some subtasks keep them in `<subtask>/images/`, which is read too).
Rows carry the hub copy's columns (lmms-lab/MME: question_id = "<subtask>/<image>", image,
question, answer, category), so one field mapping serves both routes.
Options: `questions_dir` (the *.txt files), `subtasks` (which files, in order).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evalkit.data.loader import DatasetError, register_adapter
from evalkit.task import DatasetSpec

# MME's eval_tool/calculation.py, eval_type_dict: the two groups and their subtasks, in its order.
PERCEPTION = ["existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR"]
COGNITION = ["commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"]


def _image_path(root: Path | None, subtask: str, name: str) -> str:
    if root is None:
        return f"{subtask}/{name}"
    for candidate in (root / subtask / name, root / subtask / "images" / name):
        if candidate.exists():
            return str(candidate)
    return str(root / subtask / name)  # missing: the sample records the error when it is decoded


@register_adapter("mme_files")
def mme_rows(ds: DatasetSpec) -> Iterator[dict[str, Any]]:
    folder = Path(ds.options.get("questions_dir") or "")
    if not folder.is_dir():
        raise DatasetError(f"mme_files: question files folder not found: {folder} "
                           "(MME eval_tool's Your_Results/, one <subtask>.txt per subtask)")
    root = Path(ds.image_root) if ds.image_root else None
    for subtask in ds.options.get("subtasks") or PERCEPTION + COGNITION:
        file = folder / f"{subtask}.txt"
        if not file.is_file():
            raise DatasetError(f"mme_files: no question file {file}")
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.strip().split("\t")
            if len(parts) < 3:
                raise DatasetError(f"mme_files: {file}:{number}: expected image<TAB>question<TAB>answer")
            image, question, answer = parts[:3]
            yield {"question_id": f"{subtask}/{image}", "image": _image_path(root, subtask, image),
                   "question": question, "answer": answer, "category": subtask}

"""Task specs: discovery, include, validation errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalkit.registry import Registry, SpecError, UnknownTaskError, load_spec

GOOD = """
task: my_vqa
groups: [mine]
dataset: {format: parquet, data_files: data.parquet}
fields: {id: question_id, image: image, question: question, references: answers}
prompts: {base: "<img>{image}</img>{question} Answer:"}
generation: {max_new_tokens: 5}
metrics: [{name: vqa_accuracy, options: {variant: official}}]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_repo_tasks_load_and_include_merges():
    reg = Registry()
    mini = reg.get("vqav2_mini")
    full = reg.get("vqav2_val")
    assert mini.prompts == full.prompts  # inherited through include
    assert mini.dataset.format == "parquet" and full.dataset.format == "hf"
    assert mini.groups == ["bundled"]
    assert mini.spec_hash() != full.spec_hash()


def test_user_dir_and_groups(tmp_path):
    write(tmp_path, "mine.yaml", GOOD)
    write(tmp_path, "_base.yaml", "not: a task")  # bases are never loaded as tasks
    reg = Registry(extra_dirs=[tmp_path])
    assert [s.name for s in reg.select("mine")] == ["my_vqa"]
    assert reg.get("my_vqa").metrics[0].options == {"variant": "official"}
    assert reg.get("my_vqa").generation.max_new_tokens == 5


@pytest.mark.parametrize(
    "mutation, message",
    [
        (("max_new_tokens: 5", "max_new_tokens: five"), "field 'generation.max_new_tokens' has the wrong type"),
        (("generation:", "generaton:"), "unknown field 'generaton' (did you mean 'generation'?)"),
        (("task: my_vqa", "name_of_task: my_vqa"), "missing required field 'task'"),
        (("name: vqa_accuracy", "name: vqa_acc"), "unknown metric 'vqa_acc' (did you mean 'vqa_accuracy'?)"),
        (("prompts: {", "prompts: [{"), "invalid YAML"),
        (("image: image, ", ""), "field 'fields.image'"),
        (("format: parquet, ", "format: parquet, splitt: x, "), "unknown field 'dataset.splitt'"),
    ],
)
def test_bad_spec_names_file_and_field(tmp_path, mutation, message):
    old, new = mutation
    assert old in GOOD
    path = write(tmp_path, "bad.yaml", GOOD.replace(old, new))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_unknown_task_suggests_close_names():
    reg = Registry()
    with pytest.raises(UnknownTaskError) as err:
        reg.select("vqav2_mnii")
    assert "did you mean" in str(err.value) and "vqav2_mini" in str(err.value)


def test_duplicate_task_names_are_an_error(tmp_path):
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", GOOD)
    with pytest.raises(SpecError, match="also defined"):
        Registry(dirs=[tmp_path])

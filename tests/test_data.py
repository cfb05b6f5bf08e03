"""Dataset adapter: the lmms-lab VQAv2 schema through `datasets`, lazy RGB images, bad rows."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from evalkit.data import DatasetError, load_samples
from evalkit.data.fields import FieldError, extract
from evalkit.registry import Registry
from evalkit.task import ImageError, ImageRef


def test_extract_paths():
    row = {"answers": [{"answer": "a"}, {"answer": "b"}], "meta": {"w": 3}, "q": "x"}
    assert extract(row, "answers[].answer") == ["a", "b"]
    assert extract(row, "meta.w") == 3
    assert extract(row, "=N/A") == "N/A"
    with pytest.raises(FieldError, match="no 'nope'"):
        extract(row, "nope")


def test_vqav2_schema_fixture_loads_as_samples():
    spec = Registry().get("vqav2_mini")
    samples = load_samples(spec)
    assert len(samples) == 18
    s = samples[0]
    assert s.id == "1001" and s.fields["question"] == "what color is the shape?"
    assert len(s.references) == 10 and s.references[0] == "red"
    assert s.metadata["image_id"] == 1 and s.metadata["index"] == 0
    image = s.images[0].load()
    assert image.mode == "RGB" and image.size == (64, 48)
    # questions about one image share its content key: the engine encodes it once
    assert samples[0].images[0].key == samples[1].images[0].key != samples[3].images[0].key


def test_missing_data_file_is_one_clear_error(tmp_path):
    spec = Registry().get("vqav2_mini")
    spec.dataset.data_files = str(tmp_path / "nope.parquet")
    with pytest.raises(DatasetError, match="dataset file not found: .*nope.parquet"):
        load_samples(spec)


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "CMYK", "I;16"])
def test_image_modes_decode_to_rgb(mode):
    buf = io.BytesIO()
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    Image.new(mode, (5, 4)).save(buf, format=fmt)
    assert ImageRef.from_bytes(buf.getvalue()).load().mode == "RGB"


def test_corrupt_and_missing_images_raise_image_error(tmp_path):
    with pytest.raises(ImageError, match="cannot decode"):
        ImageRef.from_bytes(b"\x89PNG not really").load()
    with pytest.raises(ImageError, match="missing.png"):
        ImageRef.from_path(tmp_path / "missing.png").load()

"""Shared test fixtures. `../shared` sits beside the repository (in CI too: a fresh clone with
shared/ beside it); tests read the reference fixtures there in place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EVALKIT_SHARED", REPO.parent / "shared"))
TINY_DIR = SHARED / "fixtures" / "qwen_vl_tiny"
TINY_CKPT = TINY_DIR / "tiny-qwen-vl"
REAL_CONFIG_DIR = SHARED / "fixtures" / "qwen_vl_config"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared fixtures not found at {SHARED} (set EVALKIT_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def tiny_dir(shared_dir: Path) -> Path:
    return TINY_DIR


@pytest.fixture(scope="session")
def tiny_ckpt(shared_dir: Path) -> Path:
    return TINY_CKPT


@pytest.fixture(scope="session")
def tiny_model(tiny_ckpt: Path):
    """The tiny checkpoint in fp32 (as the reference was run), loaded once; tests must not modify it."""
    import torch

    from evalkit.models.qwen_vl import QwenVLForCausalLM

    return QwenVLForCausalLM.from_pretrained(tiny_ckpt, torch_dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def tiny_processor(tiny_ckpt: Path):
    from evalkit.models.qwen_vl import QwenVLProcessor

    return QwenVLProcessor.from_pretrained(tiny_ckpt)


@pytest.fixture(scope="session")
def expected(tiny_dir: Path) -> dict:
    import json

    return json.loads((tiny_dir / "expected.json").read_text())

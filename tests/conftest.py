"""Test fixtures shared by the suite. Everything the tests read lives in tests/fixtures/ (see its
README for where each fixture came from); nothing outside the repository is read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from skip_policy import pytest_sessionfinish  # noqa: F401  (the hook: in CI only a missing GPU may skip a test)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
TINY_DIR = FIXTURES / "qwen_vl_tiny"
TINY_CKPT = TINY_DIR / "tiny-qwen-vl"
REAL_CONFIG_DIR = FIXTURES / "qwen_vl_config"
CHAT_CONTEXT = FIXTURES / "qwen_vl_chat" / "make_context.json"
COCO_CAPTION_RESULTS = FIXTURES / "coco-caption" / "captions_val2014_fakecap_results.json"
PAPER_NUMBERS = FIXTURES / "paper_numbers.json"


def checkout_env(**extra: str) -> dict[str, str]:
    """os.environ with this checkout first on PYTHONPATH, for subprocesses (`python -m evalkit`, `-m lmms_eval`):
    pytest's own `pythonpath` setting reaches only this process, so without it a subprocess would import
    whatever evalkit is installed and test that instead of the code beside the tests."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


@pytest.fixture
def compile_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """torch.compile replaced by a wrapper that counts its forward calls in ["compiled"]: a test sees what
    was compiled and when it ran, and no compiler runs."""
    import torch

    calls = {"compiled": 0}

    class Counted(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):
            calls["compiled"] += 1
            return self.inner(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: Counted(module))
    return calls


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    return TINY_DIR


@pytest.fixture(scope="session")
def tiny_ckpt() -> Path:
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

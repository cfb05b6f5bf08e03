"""The suite tests the checkout and hides nothing: subprocesses import the evalkit beside the tests, and in CI
a skip for any reason but a missing GPU fails the run (tests/skip_policy.py)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, checkout_env

TESTS = REPO / "tests"
# test files whose subprocesses must not see the checkout, and why
INSTALLED_ON_PURPOSE = {"tests/test_wheel.py": "tests the built wheel installed in a venv, the checkout kept off the path"}


def test_subprocesses_import_the_checkout(tmp_path):
    code = "import evalkit, pathlib; print(pathlib.Path(evalkit.__file__).resolve().parent)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=checkout_env(), capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == str(REPO / "evalkit")


def test_every_test_subprocess_gets_the_checkout_env():
    # a test that starts Python (python -m evalkit, -m lmms_eval, the fault worker) must pass checkout_env()
    # (directly or through fixtures/cli_runs.env), else it tests an installed copy
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = str(path.relative_to(REPO))
        if name in INSTALLED_ON_PURPOSE:
            continue
        if "sys.executable" in text and "checkout_env(" not in text and "cli_runs.env(" not in text:
            offenders.append(name)
    assert not offenders, offenders


def _pytest(tmp_path, body: str, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_sample.py").write_text("import pytest\n\n" + body)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # keep the repo's addopts and conftest out
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "skip_policy",
                           str(tmp_path)], cwd=tmp_path,
                          env=checkout_env(PYTHONPATH=str(TESTS), **env), capture_output=True, text=True)


def test_ci_fails_on_a_skip_that_is_not_about_the_gpu(tmp_path):
    body = ('def test_ok():\n    pass\n\n'
            '@pytest.mark.skipif(True, reason="chromium not installed")\ndef test_report():\n    pass\n')
    strict = _pytest(tmp_path, body, CI="true")
    assert strict.returncode == 1, strict.stdout
    assert "skipped in CI (only a missing GPU may skip): test_sample.py::test_report: chromium not installed" in strict.stdout
    assert _pytest(tmp_path, body, CI="", EVALKIT_STRICT_SKIPS="").returncode == 0  # outside CI a skip is a skip
    module = 'pytest.skip("lmms-eval is not installed", allow_module_level=True)\n'
    assert _pytest(tmp_path, module, CI="true").returncode == 1


def test_ci_allows_gpu_skips(tmp_path):
    body = ('def test_ok():\n    pass\n\n'
            '@pytest.mark.skipif(True, reason="needs a CUDA GPU")\ndef test_bf16():\n    pass\n')
    result = _pytest(tmp_path, body, CI="true")
    assert result.returncode == 0, result.stdout

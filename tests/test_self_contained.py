"""The repository stands alone: no tracked file points outside it for data.

Users, packagers and contributors never have the reference-material folder that sits beside the
project's development checkout, so a test, benchmark or README command that reads it passes for
its authors and fails for everyone else. Only the fixture READMEs may name it, to say where a
fixture was copied from.
"""

from __future__ import annotations

import subprocess

from conftest import REPO

# Spelled in pieces so that this file does not match itself.
FORBIDDEN = ("../" + "shared", "EVALKIT_" + "SHARED", "/work/" + "shared")


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name]


def test_no_tracked_file_reads_outside_the_repository():
    offenders = []
    for name in tracked_files():
        if name.startswith("tests/fixtures/") and name.rsplit("/", 1)[-1].startswith("README"):
            continue
        path = REPO / name
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary: parquet, images, weights
        text = data.decode("utf-8", errors="replace")
        offenders += [f"{name}: {word}" for word in FORBIDDEN if word in text]
    assert not offenders, "files that point outside the repository:\n" + "\n".join(offenders)

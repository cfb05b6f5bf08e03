"""Where the repository's top-level run-time files are: `tasks/`, `results/paper.json`, `benchmarks/configs/`.

They stay at the top of the repository, where people look for them (and add their own task
specs). A wheel carries copies of them under `evalkit/_repo/` (setup.py puts them there at build
time); a checkout or an editable install reads them beside the package. The choice is made once
for the whole tree, so an installed evalkit never picks up an unrelated `tasks/` folder that
happens to sit in site-packages.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SHIPPED = PACKAGE / "_repo"  # in a wheel: the repository's run-time files (see setup.py)
DEMO_CHECKPOINT = PACKAGE / "demo" / "assets" / "model"  # the demo model (evalkit.demo.train writes it)


def repo_root() -> Path:
    """The folder that holds `tasks/`, `results/`, `benchmarks/`: the wheel's copy, else the checkout."""
    return SHIPPED if SHIPPED.is_dir() else PACKAGE.parent


def repo_path(relative: str | Path) -> Path:
    """A top-level repository file or folder, e.g. `repo_path("results/paper.json")`."""
    return repo_root() / relative


def user_path(path: str | Path) -> Path:
    """A path a user typed; a relative one that does not exist from here but names a shipped
    repository file is that file, so `--config benchmarks/configs/small_cpu.json` works from an
    installed wheel in any folder, as the README writes it."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    shipped = repo_path(given)
    return shipped if shipped.exists() else given

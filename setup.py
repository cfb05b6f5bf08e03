"""Ships the repository's top-level run-time files inside the wheel (the rest is in pyproject.toml).

`tasks/`, `results/paper.json` and `benchmarks/configs/` stay at the top of the repository, where
people look for them; a wheel gets copies under `evalkit/_repo/`, where `evalkit.resources` finds
them. An editable install reads the checkout itself, so nothing is copied then.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# Everything a command reads at run time from outside the package (MANIFEST.in lists the same for sdists).
SHIPPED = ("tasks/**/*.yaml", "results/paper.json", "benchmarks/configs/*")


class BuildPyWithRepoFiles(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib, "evalkit", "_repo")
        shutil.rmtree(target, ignore_errors=True)  # a spec deleted since the last build must not ship
        for pattern in SHIPPED:
            for src in sorted(Path().glob(pattern)):
                if src.is_file():
                    dest = target / src
                    self.mkpath(str(dest.parent))
                    self.copy_file(str(src), str(dest))


setup(cmdclass={"build_py": BuildPyWithRepoFiles})

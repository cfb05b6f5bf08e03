"""evalkit: an evaluation harness for vision-language models with a faithful, fast Qwen-VL.

The Python API (`evalkit.api`) is imported on first use, so `import evalkit` stays cheap:
`evaluate`, `load_run`, `compare`, `list_tasks` and the `Run` they return.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Run", "__version__", "compare", "evaluate", "list_tasks", "load_run"]
_API = {"Run", "compare", "evaluate", "list_tasks", "load_run"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from evalkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'evalkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _API)

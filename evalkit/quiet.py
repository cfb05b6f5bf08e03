"""The libraries' own chatter (transformers' "Loading weights" bar, datasets' "Generating ... split"
lines, the PTB tokenizer's "tokenized N tokens") is hidden unless `--verbose`: on every run it
buries the few lines evalkit prints. evalkit's own progress bars are not affected.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_state = {"verbose": False}


def configure(verbose: bool) -> None:
    """Quiet (or, with `verbose`, restore) the progress bars of datasets and transformers."""
    import datasets
    import transformers.utils.logging as tlog

    _state["verbose"] = verbose
    if verbose:
        datasets.enable_progress_bars()
        tlog.enable_progress_bar()
    else:
        datasets.disable_progress_bars()
        tlog.disable_progress_bar()


def verbose() -> bool:
    return _state["verbose"]


@contextmanager
def child_stderr_quiet() -> Iterator[None]:
    """Send what child processes (the PTB tokenizer's java) write to stderr to /dev/null, unless verbose.

    They inherit file descriptor 2, so it is that descriptor, not `sys.stderr`, that is redirected.
    """
    if _state["verbose"]:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)

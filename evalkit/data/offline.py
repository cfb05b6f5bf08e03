"""No network: tell it in a second, not after half a minute of retries, and say what to do.

When the hub cannot be reached, hub datasets are read from the local hub cache only (datasets'
offline mode, no retries); one that is not there is one error naming the local copies looked for
under --data-dir and the download command of the huggingface_hub that is installed (`hf` since
huggingface_hub 1.0, `huggingface-cli` before).
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0
_unreachable: set[str] = set()  # endpoints found unreachable, while offline mode is forced for them


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_offline_requested() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_reachable(endpoint: str | None = None) -> bool:
    """Whether a TCP connection to the hub (or to the HTTPS proxy in use) opens within a few seconds."""
    if hub_offline_requested():
        return False
    return _can_connect(endpoint or hub_endpoint(), os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"))


@functools.lru_cache(maxsize=8)
def _can_connect(endpoint: str, proxy: str | None) -> bool:
    url = urlparse(proxy or endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def hub_cli() -> str:
    """The command-line tool the installed huggingface_hub ships."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        scripts = {e.name for e in distribution("huggingface_hub").entry_points if e.group == "console_scripts"}
    except PackageNotFoundError:
        scripts = set()
    return "hf" if "hf" in scripts or not scripts else "huggingface-cli"


def download_command(repo: str, local_dir: str = "DATA_DIR") -> str:
    return f"{hub_cli()} download --repo-type dataset {repo} --local-dir {Path(local_dir) / repo}"


@contextmanager
def offline_when_unreachable(active: bool) -> Iterator[bool]:
    """Within: datasets and huggingface_hub in offline mode (cache only) if the hub cannot be reached.
    Yields whether it is so."""
    if not active or hub_offline_requested() or hub_reachable():
        yield active and hub_offline_requested()
        return
    import datasets.config
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    _unreachable.add(hub_endpoint())
    try:
        yield True
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved
        _unreachable.discard(hub_endpoint())


def offline_message(task: str, repo: str, data_dir: str | None) -> str:
    from evalkit.data.sources import hub_ids

    if data_dir:
        root = Path(data_dir).expanduser().absolute()
        tried = f"no local copy at {' or '.join(str(root / i) for i in hub_ids(repo))}"
        fix = f"`{download_command(repo, data_dir)}`"
    else:
        tried = "no --data-dir given (a local copy at DIR/<repo id> is used with --data-dir DIR)"
        fix = f"`{download_command(repo)}` and pass --data-dir DATA_DIR"
    endpoint = hub_endpoint()
    how = f"{endpoint} cannot be reached" if endpoint in _unreachable else "offline mode is on (HF_HUB_OFFLINE)"
    return (f"task {task}: dataset {repo} is not available: {how}, it is not in the hub cache, and {tried}; "
            f"where there is network, run {fix}")

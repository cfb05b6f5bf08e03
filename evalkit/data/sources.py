"""Where a hub dataset is read from, under every name it had.

lmms-eval up to v0.7.2 named its dataset repos `lmms-lab/<X>`; from v0.7.3 they are
`lmms-lab-encoder/<X>` (the old names redirect online only). Users hold copies under either name,
so a hub dataset is looked up, in order: a local copy under `--data-dir` (`DIR/<org>/<X>`, each
name), a snapshot in the Hugging Face hub cache (each name; works offline), then the hub itself
under the spec's name. `HubSource` says which was read; run.json records it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HUB_ORGS = ("lmms-lab-encoder", "lmms-lab")  # lmms-eval >= 0.7.3, and the name before


@dataclass(frozen=True)
class HubSource:
    repo: str  # the repo id that was found
    found_in: str  # "data_dir" | "hf_cache" | "hub"
    path: str  # what datasets.load_dataset is given: a local folder, or the repo id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hub_ids(repo: str) -> list[str]:
    """The spec's repo id first, then the same dataset under the other lmms-lab organisation."""
    org, sep, name = repo.partition("/")
    if not sep or org not in HUB_ORGS:
        return [repo]
    return [repo] + [f"{other}/{name}" for other in HUB_ORGS if other != org]


def cached_snapshot(repo: str) -> str | None:
    """The hub cache's snapshot folder of a dataset repo, if one was downloaded (no network)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(repo_id=repo, repo_type="dataset", local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def locate_hub(repo: str, data_dir: str | None) -> HubSource:
    ids = hub_ids(repo)
    for repo_id in ids if data_dir else []:
        local = Path(data_dir) / repo_id
        if local.exists():
            return HubSource(repo_id, "data_dir", str(local))
    for repo_id in ids:
        snapshot = cached_snapshot(repo_id)
        if snapshot:
            return HubSource(repo_id, "hf_cache", snapshot)
    return HubSource(repo, "hub", repo)


def hub_places(repo: str, data_dir: str | None) -> list[str]:
    """Every place `locate_hub` looks, in order (for `evalkit tasks --show`)."""
    ids = hub_ids(repo)
    where = [str(Path(data_dir).expanduser().absolute() / i) if data_dir else f"<--data-dir>/{i}" for i in ids]
    cache = hub_cache_dir()
    where += [f"{cache}/datasets--{i.replace('/', '--')}" + " (hub cache)" for i in ids]
    return [*where, f"https://huggingface.co/datasets/{repo} (online)"]

"""The one unique-id rule: how samples that share an id are told apart.

Sample ids key a run's cache and its samples/<key>.jsonl, so a dataset that repeats an id
(two questions on one image keyed by the image) must not merge them: the second and later
get `#1`, `#2`... The runner keys its cache with these ids and the report matches the run's
predictions back to the dataset with them, so both take them from here.
"""

from __future__ import annotations

from collections.abc import Sequence

from evalkit.task import Sample, stable_hash


def unique_ids(samples: Sequence[Sample]) -> list[str]:
    """The samples' ids in order, a repeated id suffixed `#n` (n = how many came before it).

    A prefix of the samples (`--limit`) gets the same ids as the whole list does."""
    seen: dict[str, int] = {}
    ids = []
    for s in samples:
        n = seen.get(s.id, 0)
        seen[s.id] = n + 1
        ids.append(f"{s.id}#{n}" if n else s.id)
    return ids


def fingerprint(samples: list[Sample]) -> str:
    """A content hash of what was evaluated (ids, text fields, references, image identities)."""
    def image_id(key: str) -> str:  # file images by name, so the same data elsewhere hashes the same
        return key.rsplit("/", 1)[-1] if key.startswith("path:") else key

    return stable_hash([[s.id, s.fields, s.references, [image_id(im.key) for im in s.images]] for s in samples])

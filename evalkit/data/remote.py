"""Images given as http(s) URLs (as the reference reads `<img>https://...</img>`): fetched once, with a
timeout and a size cap, into an on-disk cache keyed by the URL, so a rerun or a resumed run reads the
file instead of the network. `EVALKIT_IMAGE_CACHE` moves the cache (default ~/.cache/evalkit/images)."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from evalkit.task import ImageError

TIMEOUT_S = 30.0
MAX_BYTES = 64 << 20  # a bigger "image" is a mistake (a video, an archive), not a benchmark image
URL_SCHEMES = ("http://", "https://")


def is_url(text: str) -> bool:
    return text.startswith(URL_SCHEMES)


def cache_dir() -> Path:
    return Path(os.environ.get("EVALKIT_IMAGE_CACHE") or Path.home() / ".cache" / "evalkit" / "images")


def fetch(url: str, timeout: float | None = None, max_bytes: int | None = None) -> bytes:
    """The bytes at `url`, from the cache when fetched before; any failure is one ImageError line."""
    timeout = TIMEOUT_S if timeout is None else timeout
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    cached = cache_dir() / hashlib.sha256(url.encode("utf-8")).hexdigest()
    if cached.is_file():
        return cached.read_bytes()
    request = urllib.request.Request(url, headers={"User-Agent": "evalkit"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise ImageError(f"cannot fetch image {url}: {int(length)} bytes, over the {max_bytes}-byte limit")
            data = response.read(max_bytes + 1)
    except ImageError:
        raise
    except urllib.error.HTTPError as exc:
        raise ImageError(f"cannot fetch image {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ImageError(f"cannot fetch image {url} (timeout {timeout:g}s): {reason}") from None
    if len(data) > max_bytes:
        raise ImageError(f"cannot fetch image {url}: over the {max_bytes}-byte limit")
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.part")
    partial.write_bytes(data)
    partial.replace(cached)  # atomic: a killed fetch never leaves a truncated cache entry
    return data

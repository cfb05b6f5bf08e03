"""The one base of evalkit's own exceptions.

An `EvalkitError` is a mistake the user can fix (an unknown task, a missing dataset, a bad
checkpoint) or a failure evalkit has already put into words, so the CLI prints its message in one
line instead of a traceback. Each subclass also keeps the builtin base it has always had
(`SpecError` is a `ValueError`, `UnknownTaskError` a `KeyError`...), so callers that catch those
keep working.
"""

from __future__ import annotations


class EvalkitError(Exception):
    """Raised only through a subclass that names what went wrong."""

"""argparse value types shared by the commands: a bad value is one line at parse time, before any work."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def at_least(kind: Callable[[str], float], minimum: float, name: str, rule: str, hint: str = "") -> Callable[[str], float]:
    """`kind(text)`, refused unless it parses (`expected {name}`) and is >= `minimum` (`{rule}, got V{hint}`)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{rule}, got {value}{hint}")
        return value

    return parse

"""`evalkit` with a fault planted at an exact point: the process SIGKILLs itself there, or each batch is slowed.

    EVALKIT_TEST_FAULTS="[--kill POINT] [--rank R] [--delay S] [--log FILE]" python tests/fault_worker.py run ...

The arguments are evalkit's; the faults come in the environment so that a launcher in front
(`torchrun`, which would take `--log` for its own `--log-dir`) leaves them alone, and `--rank`
limits a fault to one rank. POINT is one of
  batch:N          at the start of the N-th batch (N-1 batches are saved)
  append:N         in the N-th cache append, after half its bytes reached the disk (a torn line)
  replace:NAME     when an atomic write of NAME (run.json, manifest.json, <task>.jsonl) has its
                   temp file written in full and is about to rename it into place
  replaced:NAME    right after that rename
The faults are planted by wrapping evalkit functions in this process only, so evalkit itself carries
no test hooks and the kill is a real SIGKILL, uncatchable, at a point chosen to the byte.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from evalkit import cli, runner
from evalkit.results import runs as results

FAULTS_VAR = "EVALKIT_TEST_FAULTS"


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def plant_batch_fault(n: int | None, delay: float, log: str | None) -> None:
    """Kill at the start of the n-th batch, sleep `delay` seconds in each, log the ids each one predicted."""
    original = runner.Runner._predict
    calls = [0]

    def predict(self, spec, chunk, *args, **kwargs):
        if not chunk:  # a rank's empty lockstep step is not a batch
            return original(self, spec, chunk, *args, **kwargs)
        calls[0] += 1
        if calls[0] == n:
            die()
        time.sleep(delay)
        preds = original(self, spec, chunk, *args, **kwargs)
        if log:
            with open(log, "a", encoding="utf-8") as f:  # one short O_APPEND write per batch: ranks never interleave
                f.write("".join(f"{spec.name} {p.sample_id}\n" for p in preds))
        return preds

    runner.Runner._predict = predict


def plant_append_fault(n: int) -> None:
    original = results.SampleCache.append
    calls = [0]

    def append(self, predictions):
        calls[0] += 1
        if calls[0] != n:
            return original(self, predictions)
        data = "".join(results.dumps(p.to_json()) + "\n" for p in predictions).encode("utf-8")
        with open(self.path, "ab") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
        die()

    results.SampleCache.append = append


def plant_replace_fault(name: str, after: bool) -> None:
    original = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == name and not after:
            die()
        original(src, dst, *args, **kwargs)
        if Path(dst).name == name and after:
            die()

    results.os.replace = replace  # results imports os itself; this is the same module object


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill", default=None)
    parser.add_argument("--rank", type=int, default=None, help="only on this rank (torchrun's RANK)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each batch takes extra")
    parser.add_argument("--log", default=None, help="append '<task> <sample id>' for each predicted sample")
    args, argv = parser.parse_args(os.environ.get(FAULTS_VAR, "").split()), sys.argv[1:]
    on_this_rank = args.rank is None or args.rank == int(os.environ.get("RANK", "0"))
    kind, _, arg = (args.kill or "").partition(":")
    if not on_this_rank:
        kind = ""
    plant_batch_fault(int(arg) if kind == "batch" else None, args.delay, args.log)
    if kind == "append":
        plant_append_fault(int(arg))
    elif kind in ("replace", "replaced"):
        plant_replace_fault(arg, after=kind == "replaced")
    elif kind not in ("", "batch"):
        parser.error(f"unknown fault {args.kill!r}")
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())

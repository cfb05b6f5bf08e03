"""The `evalkit` command: run | tasks (and compare | check | report | bench where installed).

User mistakes (an unknown task, a missing dataset, a bad checkpoint) end in one line on
stderr and exit code 2, never a traceback; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from evalkit import __version__
from evalkit.api import DEFAULT_MODEL, DEFAULT_TASKS  # the embedded default (see evalkit.api)
from evalkit.argtypes import at_least
from evalkit.errors import EvalkitError
from evalkit.models.base import DTYPE_NAMES

if TYPE_CHECKING:
    from evalkit.distributed import Dist

_COMMANDS: dict[str, Callable[[argparse.ArgumentParser], None]] = {}


def command(name: str):
    def wrap(fn):
        _COMMANDS[name] = fn
        return fn

    return wrap


class Parser(argparse.ArgumentParser):
    """No prefix matching (`--shot 2` is not `--shots 2`), and a bad flag is one line, not a usage block."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")


_positive_int = at_least(int, 1, "a positive integer", "must be a positive integer",
                         " (leave it out to use every sample)")
_non_negative_int = at_least(int, 0, "a non-negative integer", "must be >= 0")


def _dtype(text: str) -> str:
    if text not in DTYPE_NAMES:
        raise argparse.ArgumentTypeError(f"invalid dtype {text!r}; use fp32, bf16 or fp16")
    return text


def _device(text: str) -> str:
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"invalid device {text!r}; use cpu, cuda, cuda:N or mps")
    return text


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def _batch_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch size must be a positive integer or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("batch size must be >= 1")
    return value


def _add_tasks_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks-dir", action="append", default=[], metavar="DIR",
                   help="an extra directory of task YAML specs (repeatable)")


@command("run")
def _run_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="model spec: qwen-vl:PATH | replay:PREDICTIONS | demo[:PATH] (default: demo, the bundled demo model)")
    p.add_argument("--tasks", default=None, help=f"comma-separated task or group names (default: {DEFAULT_TASKS})")
    p.add_argument("--output", "-o", default=None,
                   help="run folder; re-running with the same folder resumes (default: runs/<model>)")
    p.add_argument("--shots", type=_int_list, default=[0], help="few-shot counts, e.g. 0,4 (default 0)")
    p.add_argument("--limit", type=_positive_int, default=None, help="evaluate only the first N samples of each task")
    p.add_argument("--seed", type=int, default=0, help="seed for few-shot sampling and bootstrap CIs (default 0)")
    p.add_argument("--batch-size", type=_batch_size, default="auto",
                   help="requests per batch, or 'auto': the largest batch memory allows, the runner handing the "
                        "model enough requests per call to fill it; results are still saved batch by batch "
                        "(default auto)")
    p.add_argument("--dtype", type=_dtype, default=None,
                   help="model dtype: fp32 | bf16 | fp16 (default: fp32 on CPU, bf16 on GPU)")
    p.add_argument("--device", type=_device, default=None, help="cpu | cuda | cuda:N | mps (default: cuda if available)")
    p.add_argument("--prompt-style", choices=["base", "chat"], default=None, help="override the model's prompt style")
    p.add_argument("--data-dir", default=None, help="directory with local copies of datasets")
    p.add_argument("--max-errors", type=_non_negative_int, default=None,
                   help="fail a task once more samples than this fail")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true",
                   help="show the libraries' own output (weight loading, dataset preparation, the PTB tokenizer)")
    _add_tasks_dir(p)


@command("tasks")
def _tasks_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group", default=None, help="only tasks of this group")
    p.add_argument("--show", default=None, metavar="TASK",
                   help="where each file of TASK is looked for (under --data-dir) and the hub ids tried")
    p.add_argument("--data-dir", default=None, help="the --data-dir the paths are shown under")
    _add_tasks_dir(p)


def cmd_run(args: argparse.Namespace) -> int:
    """Under torchrun each rank runs a shard and rank 0 alone prints and writes the results."""
    from evalkit.distributed import Dist

    dist = Dist.from_env().init(device=args.device)
    try:
        return _run(args, dist)
    finally:
        dist.close()


def _run(args: argparse.Namespace, dist: Dist) -> int:
    """The cheap checks come first (flags at parse time, then in `evaluate`: output folder writable,
    device present, tasks known; in the runner: data loadable, model files valid), so that a mistake
    costs seconds and not a model load; the weights load only when some sample is not cached."""
    from evalkit import quiet
    from evalkit.api import evaluate
    from evalkit.results.tables import metrics_table

    if args.model is None and args.tasks is None and dist.is_main:
        print(f"evalkit: no --model/--tasks given: running the embedded default ({DEFAULT_MODEL} on {DEFAULT_TASKS})")
    quiet.configure(args.verbose)
    run = evaluate(args.model or DEFAULT_MODEL, args.tasks or DEFAULT_TASKS, args.output, shots=args.shots,
                   limit=args.limit, seed=args.seed, batch_size=args.batch_size, dtype=args.dtype, device=args.device,
                   prompt_style=args.prompt_style, data_dir=args.data_dir, max_errors=args.max_errors,
                   tasks_dir=args.tasks_dir, progress=not args.no_progress and sys.stderr.isatty(), dist=dist)
    if run is None:  # not rank 0
        return 0
    tasks = run.data["tasks"]
    shown = {**run.data, "tasks": {k: v for k, v in tasks.items() if k in run.requested}}
    print(metrics_table(shown))
    _print_notes(shown)
    earlier = [k for k in tasks if k not in run.requested]
    if earlier:
        print(f"\n{run.path / 'run.json'} also holds {len(earlier)} earlier result(s): {', '.join(earlier)}")
    print(f"\nresults: {run.path / 'run.json'}")
    return 0




def _print_notes(data: dict) -> None:
    """What a reader of the table must know: failed samples, metric caveats that apply (CIDEr on a
    subset) and where private-answer splits are scored."""
    for key, t in data["tasks"].items():
        if t.get("n_errors"):
            print(f"warning ({key}): {_errors_line(t)}")
        info = t.get("info", {})
        notes = list(info.get("notes", []))
        notes += [v["note"] for v in info.values() if isinstance(v, dict) and v.get("note")]
        if t.get("subset"):
            notes += [v["subset_note"] for v in info.values() if isinstance(v, dict) and v.get("subset_note")]
        for note in dict.fromkeys(notes):
            print(f"note ({key}): {note}")
        if t.get("submission"):
            where = t.get("upload_to", "the evaluation server")
            print(f"note ({key}): answers are private; upload {t['submission']} to {where}")


ERROR_KINDS = {
    "MissingPrediction": "had no prediction in the replayed file",
    "ContextOverflow": "did not fit the model's context",
    "ImageError": "had an image that could not be read",
}


def _errors_line(entry: dict) -> str:
    n, total = entry.get("n_errors", 0), entry.get("n_samples", 0)
    kinds = entry.get("error_kinds") or {}
    parts = [f"{c} {ERROR_KINDS.get(k, f'failed ({k})')}" for k, c in kinds.items()]
    detail = f" ({'; '.join(parts)})" if parts else ""
    return (f"{n} of {total} samples failed{detail}; they count as wrong in the scores "
            "(samples/*.jsonl says why per sample; --max-errors N stops a run after N failures)")


def cmd_tasks(args: argparse.Namespace) -> int:
    import pandas as pd

    if args.show:
        from evalkit.data.layout import describe_task
        from evalkit.registry import Registry

        print(describe_task(Registry(extra_dirs=args.tasks_dir).get(args.show), args.data_dir))
        return 0
    from evalkit.api import list_tasks
    from evalkit.results.compare import load_paper
    from evalkit.results.tables import text_table

    every = list_tasks(args.tasks_dir)
    groups: dict[str, int] = {}
    for task_groups in every["groups"]:
        for g in task_groups:
            groups[g] = groups.get(g, 0) + 1
    table = every[every["groups"].map(lambda g: args.group in g)] if args.group else every
    if args.group and table.empty:
        print(f"evalkit: error: no group {args.group!r}; groups: {', '.join(sorted(groups))}", file=sys.stderr)
        return 2
    columns = ("task", "groups", "dataset", "split", "metric", "output")
    rows = [(*columns, "paper: Qwen-VL / -Chat")]
    for r in table.itertuples(index=False):
        numbers = [None if pd.isna(v) else v for v in (r.paper, r.paper_chat)]
        shown = " / ".join("-" if v is None else f"{v:g}" for v in numbers) if any(v is not None for v in numbers) else ""
        rows.append((*(",".join(v) if c == "groups" else str(v) for c, v in zip(columns, r)), shown))
    print(text_table(rows))
    print(f"\n{len(table)} tasks; groups: {', '.join(f'{g} ({n})' for g, n in sorted(groups.items()))}")
    for name, entry in load_paper(None).get("absent", {}).items():  # reported by the paper, not runnable
        reported = ", ".join(f"{m} {v:g}" for m, v in entry.items() if isinstance(v, int | float))
        print(f"not available: {name} (paper: {reported}): {entry.get('why', '')}")
    return 0


def _handlers() -> dict[str, Callable[[argparse.Namespace], int]]:
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {"run": cmd_run, "tasks": cmd_tasks}
    from importlib import import_module

    for name, module in (("compare", "evalkit.results.compare"), ("diff", "evalkit.results.diff"), ("check", "evalkit.results.check"),
                         ("report", "evalkit.results.report"), ("bench", "evalkit.models.qwen_vl.bench")):
        mod = import_module(module)  # each costs little: torch is imported inside the commands
        _COMMANDS[name] = getattr(mod, f"add_{name}_arguments")
        handlers[name] = getattr(mod, f"cmd_{name}")
    return handlers


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    handlers = _handlers()
    parser = Parser(prog="evalkit", description="Evaluate vision-language models (Qwen-VL paper suite).")
    parser.add_argument("--version", action="version", version=f"evalkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    for name, add in _COMMANDS.items():
        doc = (handlers[name].__doc__ or "").strip().splitlines()
        p = sub.add_parser(name, help=doc[0] if doc else None, description=handlers[name].__doc__)
        add(p)
    parser.set_defaults(subparsers=sub.choices)
    return parser, handlers


def _unknown_flags(parser: argparse.ArgumentParser, extra: list[str]) -> None:
    """`evalkit run --shot 2`: one line from `evalkit run` naming the flag it does have."""
    import difflib

    known = [o for action in parser._actions for o in action.option_strings]
    flag = next((a.split("=", 1)[0] for a in extra if a.startswith("-")), "")
    close = difflib.get_close_matches(flag, known, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")


def main(argv: list[str] | None = None) -> int:
    parser, handlers = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not [a for a in argv if a != "--debug"]:
        argv.append("run")  # bare `evalkit`: the embedded default run
    args, extra = parser.parse_known_args(argv)
    if extra:
        _unknown_flags(args.subparsers.get(args.command, parser) if args.command else parser, extra)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        _check_output_folders(args)
        return handlers[args.command](args)
    except (EvalkitError, FileNotFoundError, PermissionError) as exc:  # the user's to fix: one line
        if args.debug:
            raise
        print(f"evalkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evalkit: interrupted", file=sys.stderr)
        return 130


def _check_output_folders(args: argparse.Namespace) -> None:
    """Commands that write a file check first that they can (run checks its folder itself)."""
    from evalkit.results.runs import check_writable

    if args.command == "report":
        run = Path(args.run)
        if args.output:
            check_writable(Path(args.output).parent, "--output", args.output)
        else:
            check_writable(run if run.is_dir() else run.parent, "report (default: RUN/report.html)")
    elif args.command == "compare" and args.output:
        check_writable(Path(args.output).parent, "--output", args.output)
    elif args.command == "bench" and getattr(args, "json", None):
        check_writable(Path(args.json).parent, "--json", args.json)


if __name__ == "__main__":
    sys.exit(main())

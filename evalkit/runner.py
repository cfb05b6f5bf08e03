"""plan -> batches -> model -> per-sample cache -> metrics -> results files.

The run folder is the cache: every finished batch is appended to `samples/<key>.jsonl`
before the next starts, so a kill loses at most the batch in flight and re-running the same
command recomputes nothing already there. A request that fails (an undecodable image, a
missing replayed prediction) is retried alone and, if it fails again, recorded on its
sample with the reason; the run goes on and the summary counts it.

Under torchrun (`evalkit.distributed`) each rank runs its share of the pending samples and
appends them to its own `samples/<key>.rank<N>.jsonl`; rank 0 gathers, scores, rewrites
`samples/<key>.jsonl` and deletes the rank files. A resumed run (with any number of ranks)
counts every cache file of a task as done, so no sample is lost or computed twice.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from evalkit import __version__
from evalkit.data import load_samples
from evalkit.data.ids import fingerprint, unique_ids
from evalkit.data.loader import dataset_source
from evalkit.distributed import Dist
from evalkit.errors import EvalkitError
from evalkit.metrics.choice import pick_by_loglikelihood
from evalkit.metrics.score import postprocess, score_task
from evalkit.models.base import Model
from evalkit.prompts import PromptError, build_request, choice_letters, choose_shots
from evalkit.results.runs import (
    SCHEMA,
    RunError,
    SampleCache,
    atomic_write_json,
    check_manifest,
    result_key,
    versions,
)
from evalkit.task import ChoiceScore, Prediction, Request, Sample, TaskSpec
from evalkit.timing import PhaseTimer


@dataclass
class RunSettings:
    output: Path
    shots: list[int] = field(default_factory=lambda: [0])
    limit: int | None = None
    seed: int = 0
    batch_size: int | None = None  # requests per model call; None ("auto"): the model's own call_size
    prompt_style: str | None = None  # None: the model's own
    data_dir: str | None = None
    max_errors: int | None = None
    model_spec: str = ""
    progress: bool = True


CONTEXT_ERROR = "ContextOverflow"


def error_kinds(preds: list[Prediction]) -> dict[str, int]:
    """Failed samples by kind (the exception name their error starts with, e.g. MissingPrediction)."""
    kinds: dict[str, int] = {}
    for p in preds:
        if p.error:
            head = p.error.split(":", 1)[0]
            kind = head if head.isidentifier() else "other"
            kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


AUTO_CALL_SIZE = 64  # requests per call with --batch-size auto, for a model that does not say (call_size)


class Interrupted(EvalkitError, RuntimeError):
    """Ctrl-C: the batch in flight finished and was saved; re-running resumes."""


class TooManyErrors(EvalkitError, RuntimeError):
    pass


class MalformedOutput(EvalkitError, ValueError):
    """A model result of the wrong type or count; recorded on its sample like any other failure."""


@contextmanager
def _stop_after_batch(escalate: bool = True) -> Iterator[dict[str, bool]]:
    """First Ctrl-C asks to stop after the current batch; a second one stops at once.

    Under torchrun a Ctrl-C reaches each rank twice (the terminal's and the one torchrun
    forwards), so there `escalate` is off and torchrun's own SIGKILL after its grace period
    is the hard stop.
    """
    flag = {"stop": False}
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if flag["stop"]:
            if escalate:
                raise KeyboardInterrupt
            return
        flag["stop"] = True
        again = "Ctrl-C again to abort now" if escalate else "torchrun stops the workers if they take too long"
        print(f"\ninterrupt: finishing the current batch ({again})", file=sys.stderr)

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: keep default behaviour
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class Runner:
    def __init__(self, model: Model, settings: RunSettings, dist: Dist | None = None):
        self.model = model
        self.settings = settings
        self.style = settings.prompt_style or getattr(model, "prompt_style", "base")
        self.out = Path(settings.output)
        self.dist = dist or Dist()
        self._subsets: dict[str, bool] = {}
        self.phases = PhaseTimer()  # where the run's time goes (run.json timing, evalkit bench --tasks)

    def run(self, specs: list[TaskSpec]) -> dict[str, Any] | None:
        """Evaluate `specs`; the run data on rank 0 (None on the other ranks, which write no run files).

        Every task's data (and few-shot pool) is loaded before the model is asked anything, so a
        missing dataset costs seconds, not a model load; a model built by `lazy_model` is loaded only
        if some sample is not cached. `run.json` keeps the results of earlier commands in the same
        folder (other tasks, other shot counts) as long as their samples files are complete.
        """
        started = time.time()
        with self.phases("data"):
            plans = [(spec, self._plan(spec), self._shot_pool(spec) if any(self.settings.shots) else [])
                     for spec in specs]
        identity = self.model.identity()
        self.dist.on_main(lambda: self._check_manifest(identity, specs))
        previous = self.dist.on_main(self._previous_results)
        results: dict[str, Any] = {}
        with _stop_after_batch(escalate=not self.dist.enabled) as stop:
            for spec, samples, pool in plans:
                for k in self.settings.shots:
                    key = result_key(spec.name, k)
                    entry = self._run_task(spec, samples, k, pool if k else [], stop, previous.get(key))
                    results[key] = {**entry, "limit": self.settings.limit, "subset": self._subsets.get(spec.name, False)}
        if not self.dist.is_main:
            return None
        tasks = self._merge(previous, results)
        data = {
            "schema": SCHEMA,
            "evalkit_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": {**identity, "spec": self.settings.model_spec},
            "settings": self._settings_record(tasks),
            "versions": versions(),
            "tasks": tasks,
            "timing": {"total_seconds": round(time.time() - started, 3), "world_size": self.dist.world_size,
                       **self.phases.as_dict()},
        }
        atomic_write_json(self.out / "run.json", data)
        return data

    def _previous_results(self) -> dict[str, Any]:
        """The task results an earlier command left in this folder's run.json ({} when there is none)."""
        from evalkit.results.runs import load_run

        if not (self.out / "run.json").exists():
            return {}
        try:
            return dict(load_run(self.out).tasks)
        except RunError as exc:
            print(f"warning: {exc}; it is rewritten with this command's results only", file=sys.stderr)
            return {}

    def _merge(self, previous: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
        """Earlier results whose samples are still complete in the folder, then (or in place) this command's."""
        merged = {}
        for key, entry in previous.items():
            if key in results:
                merged[key] = results[key]
            elif self._complete(key, entry):
                merged[key] = entry
        return {**merged, **{k: v for k, v in results.items() if k not in merged}}

    def _complete(self, key: str, entry: dict[str, Any]) -> bool:
        file = self.out / "samples" / f"{key}.jsonl"
        if not isinstance(entry, dict) or not file.exists() or self._rank_files(key):
            return False
        return len(SampleCache(file).load()) == entry.get("n_samples")

    # ------------------------------------------------------------ planning

    def _plan(self, spec: TaskSpec) -> list[Sample]:
        """The task's samples (the first --limit of them; whether that is a strict subset goes to `_subsets`)."""
        samples = load_samples(spec, self.settings.data_dir)
        self._subsets[spec.name] = self.settings.limit is not None and self.settings.limit < len(samples)
        if self.settings.limit is not None:
            samples = samples[: self.settings.limit]
        for s, sample_id in zip(samples, unique_ids(samples)):  # ids key the cache: repeats must not merge
            s.id = sample_id
        return samples

    def _check_manifest(self, identity: dict[str, Any], specs: list[TaskSpec]) -> None:
        """A folder's cache is only valid for the same model, seed, prompt style and specs."""
        check_manifest(self.out, {"model": identity, "seed": self.settings.seed, "prompt_style": self.style,
                                  "tasks": {s.name: s.spec_hash() for s in specs}})

    def _settings_record(self, tasks: dict[str, Any]) -> dict[str, Any]:
        """This command's settings; `tasks` and `shots` cover every result in run.json (each result
        records its own `limit`)."""
        s = asdict(self.settings)
        s["output"] = str(self.settings.output)
        s["prompt_style"] = self.style
        s["tasks"] = list(dict.fromkeys(t.get("task") for t in tasks.values()))
        s["shots"] = sorted({int(t.get("shots", 0)) for t in tasks.values()})
        s.pop("progress")
        s.pop("batch_size")  # results must not depend on it; recorded under timing-free settings only
        return s

    # ------------------------------------------------------------ one task

    def _run_task(
        self, spec: TaskSpec, samples: list[Sample], shots: int, pool: list[Sample], stop: dict[str, bool],
        stored: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        key = result_key(spec.name, shots)
        done: dict[str, Prediction] = {}  # filled on rank 0 only

        def pending() -> tuple[list[str], int, dict[str, Any] | None]:
            done.update(self._load_cached(key))
            self._refuse_shrink(key, samples, done)
            todo = [s.id for s in samples if s.id not in done]
            if len(todo) < len(samples):
                print(f"{key}: {len(samples) - len(todo)}/{len(samples)} samples cached"
                      + (f", {len(todo)} to run" if todo else ""), file=sys.stderr)
            reuse = stored if not todo and self._still_valid(spec, samples, stored, key) else None
            return todo, sum(1 for p in done.values() if p.error), reuse

        pending_ids, cached_errors, reuse = self.dist.on_main(pending)
        if reuse is not None:  # every sample cached and the stored scores are of these samples: nothing to redo
            entry = {k: v for k, v in reuse.items() if k not in ("limit", "subset")}
            metrics = entry.get("metrics", {})  # run.json's keys are sorted: the primary metric first again
            primary = entry.get("primary_metric")
            entry["metrics"] = {**({primary: metrics[primary]} if primary in metrics else {}), **metrics}
            return entry
        pending_set = set(pending_ids)
        started = time.time()
        bar = tqdm(total=len(samples), initial=len(samples) - len(pending_set), desc=key, unit="sample",
                   disable=not self.settings.progress or not self.dist.is_main, leave=False)
        try:
            new = self._run_shard(spec, [s for s in samples if s.id in pending_set], shots, pool, stop, cached_errors, bar)
        finally:
            bar.close()
        gathered = self.dist.gather(new)
        with self.phases("score"):
            return self.dist.on_main(lambda: self._finish_task(spec, samples, shots, done, gathered or [], started))

    def _refuse_shrink(self, key: str, samples: list[Sample], done: dict[str, Prediction]) -> None:
        """A result is only ever extended: a command that would drop cached samples of it is refused."""
        extra = done.keys() - {s.id for s in samples}
        if not extra:
            return
        asked = f"--limit {self.settings.limit}" if self.settings.limit is not None else "this command"
        raise RunError(f"{self.out}: {key} already has {len(done)} samples, {len(extra)} of them outside the "
                       f"{len(samples)} that {asked} asks for, and rewriting its result would drop them; "
                       "run with the earlier --limit (or none), or use another --output folder")

    def _still_valid(self, spec: TaskSpec, samples: list[Sample], stored: dict[str, Any] | None, key: str) -> bool:
        """Whether run.json's entry scored exactly these samples with this spec and prompt."""
        return (isinstance(stored, dict) and not self._rank_files(key)
                and stored.get("n_samples") == len(samples)
                and stored.get("spec_hash") == spec.spec_hash()
                and stored.get("prompt_hash") == spec.prompt_hash(self.style)
                and stored.get("dataset_fingerprint") == fingerprint(samples))

    def _run_shard(
        self, spec: TaskSpec, pending: list[Sample], shots: int, pool: list[Sample], stop: dict[str, bool],
        cached_errors: int, bar: Any,
    ) -> list[Prediction]:
        """This rank's share of `pending`, batch by batch, each appended to its cache file as it completes.

        Ranks step in lockstep (the same number of steps, a short one or an empty one at the end) and
        agree after each step on the error count and on a Ctrl-C, so every rank stops at the same step
        with the same message and none is left waiting in a collective for a rank that has gone.
        """
        key = result_key(spec.name, shots)
        cache = SampleCache(self.out / "samples" / f"{key}.jsonl")
        own = SampleCache(cache.path.with_suffix(f".rank{self.dist.rank}.jsonl")) if self.dist.enabled else cache
        mine = self.dist.shard(pending)
        bs = self._call_size()
        errors = cached_errors
        new: list[Prediction] = []
        streamed: set[int] = set()

        def save(done: list[Prediction]) -> None:
            """A model batch finished inside a call: saved now (resume), counted on the bar."""
            with self.phases("save"):
                own.append(done)
            streamed.update(id(p) for p in done)
            if not self.dist.enabled:
                bar.update(len(done))
                if stop["stop"]:  # alone, a Ctrl-C need not wait for the whole call
                    raise Interrupted(f"stopped during {key}; re-run the same command to resume")

        for step in range(self.dist.steps(len(pending), bs)):
            preds = self._predict(spec, mine[step * bs : (step + 1) * bs], shots, pool, save)
            rest = [p for p in preds if id(p) not in streamed]
            if rest or len(rest) == len(preds):  # the step's predictions not saved batch by batch
                with self.phases("save"):
                    own.append(rest)
                if not self.dist.enabled:
                    bar.update(len(rest))
            new += preds
            n_done, n_errors, n_stop = self.dist.sum(len(preds), sum(1 for p in preds if p.error), int(stop["stop"]))
            if self.dist.enabled:
                bar.update(n_done)
            errors += n_errors
            self._check_errors(spec, errors)
            if n_stop:
                raise Interrupted(f"stopped during {key}; re-run the same command to resume")
        return new

    def _load_cached(self, key: str) -> dict[str, Prediction]:
        """Every prediction cached for `key`: the task file, then rank files a torchrun run left behind."""
        samples_dir = self.out / "samples"
        done = SampleCache(samples_dir / f"{key}.jsonl").load()
        for file in self._rank_files(key):
            for sid, pred in SampleCache(file).load().items():
                done.setdefault(sid, pred)
        return done

    def _rank_files(self, key: str) -> list[Path]:
        return sorted((self.out / "samples").glob(f"{key}.rank*.jsonl"))

    def _finish_task(
        self, spec: TaskSpec, samples: list[Sample], shots: int, done: dict[str, Prediction],
        gathered: list[list[Prediction]], started: float,
    ) -> dict[str, Any]:
        """Rank 0: merge every rank's predictions, score, and rewrite the task's file in dataset order."""
        key = result_key(spec.name, shots)
        cache = SampleCache(self.out / "samples" / f"{key}.jsonl")
        for part in gathered:
            done.update({p.sample_id: p for p in part})
        self._check_errors(spec, sum(1 for p in done.values() if p.error))
        preds = [done[s.id] for s in samples]
        for p in preds:
            p.scores = {}
        kinds = error_kinds(preds)
        if preds and kinds.get(CONTEXT_ERROR) == len(preds):
            first = preds[0].error.split(": ", 1)[-1] if preds[0].error else ""
            raise RunError(f"{key}: no prompt fits the model's context ({first}); nothing was scored")
        extra: dict[str, Any] = {"error_kinds": kinds} if kinds else {}
        if spec.submission:  # private answers: write the server's file instead of scoring
            from evalkit.results.submission import SERVERS, submission_suffix, write_submission

            file = self.out / f"{key}_submission{submission_suffix(spec.submission)}"
            write_submission(spec.submission, preds, samples, file)
            scored: dict[str, Any] = {"metrics": {}, "info": {}}
            extra["submission"] = str(file)
            extra["upload_to"] = SERVERS[spec.submission]
        else:
            scored = score_task(spec, samples, preds, seed=self.settings.seed)
        cache.finalize(preds)
        for file in self._rank_files(key):  # merged into the task file above
            file.unlink()
        return {
            **extra,
            "task": spec.name,
            "shots": shots,
            "spec_hash": spec.spec_hash(),
            "prompt_hash": spec.prompt_hash(self.style),
            "dataset_fingerprint": fingerprint(samples),
            "dataset_source": dataset_source(spec, self.settings.data_dir),  # which hub name / copy was read
            "n_samples": len(samples),
            "n_errors": sum(1 for p in preds if p.error),
            "primary_metric": next(iter(scored["metrics"]), None),
            "groups": spec.groups,
            **scored,
            "seconds": round(time.time() - started, 3),
        }

    def _shot_pool(self, spec: TaskSpec) -> list[Sample]:
        if spec.fewshot is None or not spec.fewshot.split:
            raise RunError(f"task {spec.name} has no few-shot source (fewshot.split in its spec); use --shots 0")
        return load_samples(spec, self.settings.data_dir, split=spec.fewshot.split)

    def _check_errors(self, spec: TaskSpec, n: int) -> None:
        limit = self.settings.max_errors
        if limit is not None and n > limit:
            raise TooManyErrors(f"task {spec.name}: {n} samples failed, more than --max-errors {limit}")

    # ------------------------------------------------------------ model calls

    def _call_size(self) -> int:
        """Requests per model call: --batch-size N, or with "auto" what the model asks for (the
        engine batches inside a call; smaller calls would cap its batch)."""
        if self.settings.batch_size is not None:
            return max(1, int(self.settings.batch_size))
        return max(1, int(getattr(self.model, "call_size", AUTO_CALL_SIZE)))

    def _predict(
        self, spec: TaskSpec, chunk: list[Sample], shots: int, pool: list[Sample],
        save: Callable[[list[Prediction]], None] = lambda done: None,
    ) -> list[Prediction]:
        """Predictions for `chunk`; those of a streamed model batch are passed to `save` as soon
        as the batch finishes, the caller saves the rest."""
        preds: list[Prediction] = []
        ready: list[tuple[Prediction, Request]] = []
        with self.phases("prompts"):
            for sample in chunk:
                pred = Prediction(sample_id=sample.id, task=spec.name, references=sample.references)
                preds.append(pred)
                if sample.error is not None:
                    pred.error = sample.error
                    continue
                try:
                    request = build_request(spec, sample, self.style, choose_shots(pool, sample, shots, self.settings.seed, spec.name))
                except PromptError as exc:
                    pred.error = str(exc)
                    continue
                pred.prompt = request.text()
                problem = self._context_error(request)
                if problem:  # never sent: the model would only see a truncated or extrapolated prompt
                    pred.error = f"{CONTEXT_ERROR}: {problem}" + ("; use fewer --shots" if shots else "")
                    continue
                ready.append((pred, request))
        if ready and hasattr(self.model, "load"):
            self.model.load()  # a model that fails to load is the run's error, not every sample's
        saved: set[int] = set()
        if getattr(self.model, "streams_batches", False) and len(ready) > 1:
            left = self._call_streaming(spec, ready, save, saved)
            for s in range(0, len(left), AUTO_CALL_SIZE):  # a failed call: find the culprit a chunk at a time
                self._call(spec, left[s : s + AUTO_CALL_SIZE])
        else:
            self._call(spec, ready)
        return preds

    def _context_error(self, request: Request) -> str | None:
        check = getattr(self.model, "context_error", None)
        return check(request) if check is not None else None

    def _call_streaming(
        self, spec: TaskSpec, ready: list[tuple[Prediction, Request]],
        save: Callable[[list[Prediction]], None], saved: set[int],
    ) -> list[tuple[Prediction, Request]]:
        """One call; each model batch is set and saved as it finishes. Returns what is left to
        do the plain way (everything not yet saved, if the call failed; else nothing)."""

        def on_batch(indices: list[int], results: list[Any]) -> None:
            done = [ready[i] for i in indices]
            self._set_results(spec, done, results)
            saved.update(id(pred) for pred, _ in done)
            save([pred for pred, _ in done])

        requests = [r for _, r in ready]
        try:
            with self.phases("model"):
                if spec.output_type == "choice":
                    self.model.loglikelihood(requests, on_batch=on_batch)
                else:
                    self.model.generate(requests, on_batch=on_batch)
        except (KeyboardInterrupt, MemoryError, Interrupted):
            raise
        except Exception:
            pass  # the rest goes the plain way, which finds the culprit and records it
        return [item for item in ready if id(item[0]) not in saved]

    def _call(self, spec: TaskSpec, ready: list[tuple[Prediction, Request]]) -> None:
        if not ready:
            return
        requests = [r for _, r in ready]
        try:
            with self.phases("model"):
                if spec.output_type == "choice":
                    results: list[Any] = self.model.loglikelihood(requests)
                else:
                    results = self.model.generate(requests)
            if not isinstance(results, list | tuple) or len(results) != len(ready):
                got = len(results) if isinstance(results, list | tuple) else type(results).__name__
                raise MalformedOutput(f"the model returned {got} results for {len(ready)} requests")
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:
            if len(ready) > 1:  # find the culprit: retry one by one
                for item in ready:
                    self._call(spec, [item])
                return
            ready[0][0].error = f"{type(exc).__name__}: {exc}"
            return
        self._set_results(spec, ready, results)

    def _set_results(self, spec: TaskSpec, ready: list[tuple[Prediction, Request]], results: list[Any]) -> None:
        if len(results) != len(ready):
            for pred, _ in ready:
                pred.error = f"MalformedOutput: the model returned {len(results)} results for {len(ready)} requests"
            return
        for (pred, request), result in zip(ready, results):
            try:
                if spec.output_type == "choice":
                    self._set_choice(pred, request, result)
                else:
                    self._set_output(pred, spec, result)
            except MalformedOutput as exc:
                pred.error = f"MalformedOutput: {exc}"

    @staticmethod
    def _set_output(pred: Prediction, spec: TaskSpec, result: Any) -> None:
        """A model's text, checked: anything but a string is this sample's error, never a crash in scoring."""
        if not isinstance(result, str):
            raise MalformedOutput(f"the model returned {type(result).__name__}, not text: {str(result)[:80]!r}")
        if not result.isascii():  # a lone surrogate has no UTF-8 form: neither the cache nor a metric could take it
            result = result.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        pred.output = result
        pred.answer = postprocess(result, spec.postprocess)

    @staticmethod
    def _set_choice(pred: Prediction, request: Request, scores: Any) -> None:
        n = len(request.choices or [])
        if (not isinstance(scores, list | tuple) or len(scores) != n or not n
                or not all(isinstance(s, ChoiceScore) for s in scores)):
            raise MalformedOutput(f"the model returned {str(scores)[:80]!r}, not {n} choice scores")
        pred.choice_scores = [[s.logprob, s.n_tokens] for s in scores]
        best = pick_by_loglikelihood(pred.choice_scores)  # the metric's own rule, so answer == what is scored
        pred.answer = best
        pred.output = "" if best is None else choice_letters(len(scores))[best]

"""Train the demo model: Qwen-VL made small, on the demo suite's train split, on CPU.

    python -m evalkit.demo.train                      # writes evalkit/demo/assets/model/

Everything goes through the project's own code: scenes from `evalkit.demo.data`, prompts built
by `evalkit.prompts.build_request` from the demo task specs (so training and evaluation prompts
cannot drift apart), the Qwen tokenizer on a vocabulary trained here (`vocab.py`), the processor's
image transform, and `QwenVLForCausalLM` itself. Each step draws fresh train scenes (the split is
unbounded) and trains all four tasks on every scene: the ViT and resampler run once per image
and their features are shared by the four sequences. The loss is cross-entropy on the answer
tokens and the closing `<|endoftext|>` only. Seeded and single-process; `--threads 2` is what
the shipped checkpoint was trained with (see the README for the measured time).

What the recipe needed, each measured on this model (teacher-forced validation loss):
a learning rate of 8e-4 (at 2e-3 it cannot memorise even 16 images), 8px patches (16px ones
learn shapes and boxes far slower), a resampler that starts local (`local_start`: without it no
box is ever learned) a weight init of 0.1, fonts of 32-36px and a reading warm-up (WARMUPS).
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evalkit.data.fields import row_to_sample
from evalkit.demo.checkpoint import MODEL_DIR, make_config, save_checkpoint
from evalkit.demo.data import DEFAULT_SEED, TASKS, make_row, make_scene, split_rows, target_text
from evalkit.demo.vocab import build_vocab
from evalkit.models.qwen_vl.adapter import QwenVLAdapter
from evalkit.models.qwen_vl.kv_cache import QwenVLDynamicCache
from evalkit.models.qwen_vl.modeling import QwenVLForCausalLM
from evalkit.models.qwen_vl.processor import QwenVLProcessor
from evalkit.models.qwen_vl.tokenizer import QwenTokenizer
from evalkit.models.qwen_vl.vision import sincos_pos_embed_2d
from evalkit.prompts import build_request
from evalkit.registry import REPO_TASKS_DIR, load_spec
from evalkit.task import Prediction, TaskSpec

# Warm-up phases: the sequences per scene and task trained instead of the full mix. Mixed in with every skill from the start, reading stays at chance at this size (the shapes'
# colours dominate what the vision tower learns first; measured: 0.05 after 1,500 steps), while
# read alone first it is learned in a few hundred steps and survives the full mix that follows.
WARMUPS: dict[str, dict[str, int]] = {"reading": {"demo_textvqa": 1}}


@dataclass
class TrainSettings:
    out: Path = MODEL_DIR
    steps: int = 4000  # warm-ups included
    scenes_per_step: int = 8
    # sequences per scene and task (variants of the question); their sum is the prefix's fan-out
    per_scene: tuple[tuple[str, int], ...] = (("demo_caption", 1), ("demo_vqa", 2), ("demo_textvqa", 1),
                                              ("demo_refcoco", 2))
    # The first steps (in this order) train one skill, see WARMUPS.
    warmups: tuple[tuple[str, int], ...] = (("reading", 400),)
    lr: float = 8e-4  # 2e-3 plateaus: at that rate the model cannot even memorise 16 images
    warmup: int = 150
    weight_decay: float = 0.05
    seed: int = 0
    data_seed: int = DEFAULT_SEED
    threads: int = 2
    eval_every: int = 500
    eval_items: int = 24
    vocab_scenes: int = 2000


def demo_specs() -> dict[str, TaskSpec]:
    return {task: load_spec(REPO_TASKS_DIR / "demo" / f"{task}.yaml") for task in TASKS}


def prompt_of(spec: TaskSpec, row: dict, index: int, style: str = "base") -> str:
    """The exact text the harness gives the tokenizer for this row (images left as `<img></img>`)."""
    return build_request(spec, row_to_sample(row, spec.fields, index, None), style).text(image_token="")


def vocab_texts(specs: dict[str, TaskSpec], n_scenes: int, seed: int) -> list[str]:
    texts = []
    for i in range(n_scenes):
        scene = make_scene(seed, "train", i)
        for task, spec in specs.items():
            row = make_row(task, scene, seed, "train", i, with_image=False)
            row["image"] = "x.png"
            texts.append(prompt_of(spec, row, i) + target_text(task, row))
            if i < 50:
                texts.extend(prompt_of(spec, row, i, "chat") for _ in range("chat" in spec.prompts))
    return texts


class Batches:
    """Step `s` uses train scenes s*n .. s*n+n-1: the data order is fixed by the seed alone.
    During the warm-ups (WARMUPS, in order) one task is trained."""

    def __init__(self, specs: dict[str, TaskSpec], tokenizer: QwenTokenizer, processor: QwenVLProcessor,
                 scenes_per_step: int, seed: int, per_scene: dict[str, int],
                 warmups: tuple[tuple[str, int], ...] = ()):
        self.specs, self.tok, self.processor = specs, tokenizer, processor
        self.n, self.seed, self.per_scene = scenes_per_step, seed, per_scene
        self.warmups = warmups

    def phase(self, step: int) -> dict[str, int]:
        """Sequences per scene and task at `step`."""
        for name, steps in self.warmups:
            if step < steps:
                return WARMUPS[name]
            step -= steps
        return self.per_scene

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        pixels, sequences, scene_of = [], [], []
        per_scene = self.phase(step)
        for i in range(step * self.n, (step + 1) * self.n):
            scene = make_scene(self.seed, "train", i)
            image = scene.render()
            pixels.append(self.processor.transform(image))
            for task, spec in self.specs.items():
                for variant in range(per_scene.get(task, 0)):
                    row = make_row(task, scene, self.seed, "train", i, with_image=False, variant=variant)
                    row["image"] = image
                    prompt = self.tok.encode(prompt_of(spec, row, i))
                    answer = self.tok.encode(target_text(task, row)) + [self.tok.eod_id]
                    sequences.append((prompt, answer))
                    scene_of.append(len(pixels) - 1)
        # Every demo prompt starts with the image span, so the sequences of one scene share the
        # prefix `<img>` + 256 slots + `</img>`; answer_loss runs it once per scene.
        n_prefix = prompt.index(self.tok.img_end_id) + 1
        if any(p[:n_prefix] != prompt[:n_prefix] for p, _ in sequences):
            raise ValueError("demo prompts must all start with the same <img>...</img> span")
        rest = [(p[n_prefix:], a) for p, a in sequences]
        longest = max(len(p) + len(a) for p, a in rest)
        ids = torch.full((len(rest), longest), self.tok.pad_token_id, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        mask = torch.zeros_like(ids)
        for row, (prompt, answer) in enumerate(rest):
            n = len(prompt) + len(answer)
            ids[row, :n] = torch.tensor(prompt + answer)
            labels[row, len(prompt):n] = torch.tensor(answer)
            mask[row, :n] = 1
        return {"prefix_ids": torch.tensor([sequences[0][0][:n_prefix]] * self.n), "input_ids": ids,
                "scene_of": torch.tensor(scene_of),
                "attention_mask": mask, "labels": labels, "pixel_values": torch.stack(pixels)}


def answer_loss(model: QwenVLForCausalLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy on the answer tokens of all sequences.

    The image prefix is run once per scene into a KV cache that is then repeated for the scene's
    sequences (exactly what attending to a copied prefix computes, at a fraction of
    the cost: the 256 image slots dominate the sequence), and the LM head runs only where a label is.
    """
    features = model.transformer.visual(batch["pixel_values"])
    cache = QwenVLDynamicCache(config=model.config)
    model.transformer(input_ids=batch["prefix_ids"], image_features=features, cache=cache)
    cache.batch_select_indices(batch["scene_of"])  # each scene's prefix (and its NTK alpha), once per sequence of it
    prefix_mask = torch.ones(batch["input_ids"].size(0), batch["prefix_ids"].size(1), dtype=torch.long)
    hidden = model.transformer(input_ids=batch["input_ids"], cache=cache,
                               attention_mask=torch.cat([prefix_mask, batch["attention_mask"]], dim=1))
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    logits = model.lm_head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep])


def local_start(model: QwenVLForCausalLM, sharpness: float = 3.5) -> None:
    """Start the resampler attending locally and the ViT's positions smooth.

    From a random start every resampler query attends to all patches alike, so each of the 256
    image slots is the same global average: colours, counts and the word survive it (and are
    learned), where a thing is does not (boxes stayed at chance). Qwen-VL's own resampler learns
    locality in pre-training; here the query and key projections start as `sharpness` x identity
    on the 2D sin-cos positions both carry (each query then attends to its own patch and a few
    neighbours), with the content's share of the keys and queries scaled down by their layer-norm
    gains, and the ViT's learned position table starts as that sin-cos table. All stay trainable.
    """
    visual = model.transformer.visual
    pool = visual.attn_pool
    dim = pool.pos_embed.size(1)
    grid = int(visual.positional_embedding.size(0) ** 0.5)
    with torch.no_grad():
        pool.attn.in_proj_weight[: 2 * dim].copy_(torch.eye(dim).repeat(2, 1) * sharpness)
        pool.ln_q.weight.fill_(0.05)
        pool.ln_kv.weight.fill_(0.05)  # the values are scaled alike; ln_post undoes that
        table = torch.from_numpy(sincos_pos_embed_2d(visual.positional_embedding.size(1), grid)).float()
        visual.positional_embedding.copy_(0.25 * table)


def lr_at(step: int, s: TrainSettings) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = (step - s.warmup) / max(s.steps - s.warmup, 1)
    return s.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def quick_eval(model: QwenVLForCausalLM, processor: QwenVLProcessor, specs: dict[str, TaskSpec], n: int,
               seed: int) -> dict[str, float]:
    """Greedy answers through the real harness on the first `n` validation rows of each task.

    VQA accuracy and Acc@0.5 with the real metric functions; for captions the share of exact
    canonical captions (CIDEr needs Java and a corpus, the full evaluation reports it).
    """
    from evalkit.metrics import get_metric

    harness = QwenVLAdapter(model, processor, path="(training)", batch_size=16)
    scores = {}
    for task, spec in specs.items():
        samples = [row_to_sample(r, spec.fields, i, None) for i, r in enumerate(split_rows(task, "validation", n, seed))]
        outputs = harness.generate([build_request(spec, s, "base") for s in samples])
        if task == "demo_caption":
            scores[task] = sum(o.strip() == s.references[0] for o, s in zip(outputs, samples)) / n
            continue
        preds = [Prediction(s.id, task, output=o, answer=o if task == "demo_refcoco" else o.strip())
                 for s, o in zip(samples, outputs)]
        metric = spec.metrics[0]
        scores[task] = get_metric(metric.name)(preds, samples, **metric.options).aggregate[metric.name]
    model.train()
    return scores


def train(s: TrainSettings) -> Path:
    torch.set_num_threads(s.threads)
    random.seed(s.seed)
    np.random.seed(s.seed)
    torch.manual_seed(s.seed)
    specs = demo_specs()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "qwen.tiktoken"
        n_ranks = build_vocab(vocab_file, vocab_texts(specs, s.vocab_scenes, s.data_seed))
        tokenizer = QwenTokenizer(vocab_file, padding_side="left")
        config = make_config(n_ranks)
        processor = QwenVLProcessor(tokenizer, image_size=config.visual["image_size"])
        model = QwenVLForCausalLM(config).float().train()
        local_start(model)
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"vocab {n_ranks} ranks + {len(tokenizer) - n_ranks} special, model {n_params / 1e6:.2f}M params")
        decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and "wte" not in n]
        other = [p for n, p in model.named_parameters() if p.requires_grad and (p.ndim < 2 or "wte" in n)]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                                       {"params": other, "weight_decay": 0.0}], lr=s.lr, betas=(0.9, 0.98))
        batches = Batches(specs, tokenizer, processor, s.scenes_per_step, s.data_seed, dict(s.per_scene),
                          s.warmups)
        running = None
        for step in range(s.steps):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, s)
            loss = answer_loss(model, batches(step))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            if (step + 1) % 50 == 0:
                print(f"step {step + 1}/{s.steps} loss {running:.4f} lr {lr_at(step, s):.2e} "
                      f"{time.time() - started:.0f}s", flush=True)
            if s.eval_every and ((step + 1) % s.eval_every == 0 or step + 1 == s.steps):
                scores = quick_eval(model, processor, specs, s.eval_items, s.data_seed)
                print("  val " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
        out = save_checkpoint(model, vocab_file, s.out, n_ranks)
    print(f"wrote {out} in {time.time() - started:.0f}s")
    return out


def main(argv: list[str] | None = None) -> None:
    defaults = TrainSettings()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=defaults.out, help="checkpoint directory (default: the packaged one)")
    for name in ("steps", "scenes_per_step", "warmup", "seed", "data_seed", "threads", "eval_every",
                 "eval_items"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    p.add_argument("--lr", type=float, default=defaults.lr)
    args = p.parse_args(argv)
    train(TrainSettings(**{k: v for k, v in vars(args).items()}))


if __name__ == "__main__":
    main()

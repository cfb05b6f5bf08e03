"""Time the CIDEr bootstrap: per-image CIDEr of 5,000 synthetic captions (computed once, with the document
frequencies of the full reference set) and 1,000 bootstrap resamples of them.

    python benchmarks/bench_cider_bootstrap.py [--images 5000] [--resamples 1000]

The captions are synthetic and already tokenised, so the Java PTB tokenizer is not timed.
"""

from __future__ import annotations

import argparse
import random
import time

from pycocoevalcap.cider.cider import Cider

from evalkit.metrics.stats import bootstrap_ci

_VOCAB = ("a man woman dog cat riding sitting standing on in the with of red blue green small large "
          "street table horse bus train beach field park snow water kitchen plate pizza phone bike")
WORDS = tuple(_VOCAB.split(" "))


def synthetic(n_images: int, seed: int = 0) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    rng = random.Random(seed)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14)))

    refs = {i: [sentence() for _ in range(5)] for i in range(n_images)}
    preds = {i: [sentence()] for i in range(n_images)}
    return refs, preds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    refs, preds = synthetic(args.images)
    start = time.perf_counter()
    corpus, per_image = Cider().compute_score(refs, preds)
    cider_s = time.perf_counter() - start
    start = time.perf_counter()
    low, high = bootstrap_ci(per_image, n_resamples=args.resamples, seed=0)
    boot_s = time.perf_counter() - start
    print(f"per-image CIDEr of {args.images} captions (once): {cider_s:.2f} s; CIDEr {corpus:.4f}")
    print(f"bootstrap {args.resamples} resamples: {boot_s:.3f} s; 95% CI [{low:.4f}, {high:.4f}]")
    print(f"total: {cider_s + boot_s:.2f} s")


if __name__ == "__main__":
    main()

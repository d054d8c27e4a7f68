"""Simhash throughput: texts/s for 300-token texts, vectorised vs a plain-Python simhash.

The texts are deterministic pseudo-English: words drawn with Zipf frequencies from a
vocabulary of 30,000 (plus the common English words and punctuation real text has).
Prints JSON; docs/clusters.md quotes the figures. ``--texts`` and ``--rounds`` to vary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harvester.services.simhash import STOPWORDS, simhash_many  # noqa: E402

TOKENS = 300
_WORD = re.compile(r"\w+")


def corpus(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = sorted(STOPWORDS) + ["".join(rng.choices(letters, k=rng.randint(3, 11)))
                                 for _ in range(30_000)]
    weights = [1 / (rank + 1) for rank in range(len(vocab))]
    texts = []
    for _ in range(count):
        words = rng.choices(vocab, weights, k=TOKENS)
        for at in range(0, TOKENS, rng.randint(8, 20)):
            words[at] = words[at].capitalize()
            words[at - 1] += rng.choice((".", ",", ";", "…", "”"))
        texts.append(" ".join(words))
    return texts


def plain_python(text: str) -> int:
    """The textbook loop: what the hot path must not be (≈570 texts/s on this kind of
    machine)."""
    counts = [0] * 64
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS:
            continue
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        for bit in range(64):
            counts[bit] += 1 if h >> bit & 1 else -1
    return sum(1 << bit for bit in range(64) if counts[bit] > 0)


def rate(func: object, texts: list[str], rounds: int) -> list[float]:
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        func(texts)  # type: ignore[operator]
        rates.append(len(texts) / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    texts = corpus(args.texts)
    simhash_many(texts[:100])  # warm up
    fast = rate(simhash_many, texts, args.rounds)
    slow = rate(lambda ts: [plain_python(t) for t in ts], texts[:500], 1)
    result = {
        "texts": args.texts, "tokens_per_text": TOKENS,
        "texts_per_s_median": round(statistics.median(fast)),
        "texts_per_s_best": round(max(fast)),
        "plain_python_texts_per_s": round(slow[0]),
        "speedup_median": round(statistics.median(fast) / slow[0], 1),
        "target_texts_per_s": 20_000,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

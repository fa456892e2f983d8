"""Made-up tweet text for the benches: a small vocabulary, so sizes and speeds repeat run to run."""
from __future__ import annotations

import random

WORDS = "the model wrote about data cats coffee python gradients tweets night code sleep rain".split()


def made_up_words(rng: random.Random, count: int | None = None) -> str:
    """`count` random words (5-25 when not given), as a tweet's text."""
    return " ".join(rng.choices(WORDS, k=rng.randint(5, 25) if count is None else count))

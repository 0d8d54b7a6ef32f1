"""A deterministic stand-in for a model: logits (and attention) for a step are a function of the step index
and the previous token, so a generation that goes wrong at one step diverges from then on."""
from __future__ import annotations

import numpy as np

VOCAB = 2048


def model(step: int, prev_token: int, vocab: int = VOCAB, kv: int | None = None):
    rng = np.random.default_rng([step, prev_token])
    scale = (0.5, 2.0, 6.0)[step % 3]  # varied entropy, so several regimes occur
    logits = (rng.standard_normal(vocab) * scale).astype(np.float32)
    logits[(prev_token * 31 + 7) % vocab] += 4.0
    kv = kv if kv is not None else 8 + step
    attention = (rng.standard_normal((2, 4, kv)) * 2.0).astype(np.float32)
    return logits, attention


def generate(session, steps: int, first_token: int = 1, on_step=None) -> list[int]:
    tokens, prev = [], first_token
    for i in range(steps):
        if on_step is not None:
            on_step(i)
        logits, attention = model(session.step_index, prev)
        prev = session.step(logits, attention).token
        tokens.append(prev)
    return tokens

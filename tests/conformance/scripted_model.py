"""The scripted model of the conformance suite (README.md, "The scripted generation"), in numpy: integer
hashing and power-of-two scales only, so every language produces the same bits."""
from __future__ import annotations

import numpy as np

_M = 0xFFFFFFFF
PEAKS = (0, 40, 80, 127)


def fmix32(h: int) -> int:
    h &= _M
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M
    h ^= h >> 16
    return h


def _fmix32_np(h: np.ndarray) -> np.ndarray:
    h = h.astype(np.uint32)  # uint32 arithmetic wraps modulo 2^32, as the scalar version masks
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def step_inputs(vocab: int, layers: int, heads: int, kv_base: int, salt: int, t: int, prev: int):
    """(logits [vocab], attention [layers, heads, kv_base + t]) as float32."""
    key = fmix32(salt ^ fmix32((t * 0x9E3779B1 + prev) & _M))
    scale = np.float32(2.0 ** -(key % 7))
    i = np.arange(vocab, dtype=np.uint32)
    k = (_fmix32_np(np.uint32(key) ^ (i * np.uint32(0x27D4EB2D))) % np.uint32(128)).astype(np.int32) - 64
    k[(prev * 31 + 7 + t) % vocab] = PEAKS[(key >> 8) % 4]
    if key % 13 == 0:
        k[:] = 0
    logits = k.astype(np.float32) * scale

    kv = kv_base + t
    akey = fmix32(key ^ 0xA77E)
    ascale = np.float32(2.0 ** -(akey % 5))
    j = np.arange(layers * heads * kv, dtype=np.uint32)
    h = _fmix32_np(np.uint32(akey) ^ (j * np.uint32(0x165667B1)))
    attention = ((h % np.uint32(128)).astype(np.int32) - 64).astype(np.float32) * ascale
    attention[(h >> np.uint32(24)) % np.uint32(23) == 0] = -np.inf
    return logits, attention.reshape(layers, heads, kv)

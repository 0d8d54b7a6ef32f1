"""Host arrays to `samplerd.v1.Tensor` without Python-level loops over elements.

Accepted (CPU; a tensor on another device is copied to the CPU first):
  - numpy arrays: float32 -> DTYPE_F32, float16 -> DTYPE_F16, a `bfloat16` dtype (ml_dtypes / JAX) ->
    DTYPE_BF16; any other real dtype (float64, ints) is converted to float32 first;
  - torch tensors: float32, float16, bfloat16 (sent as its raw 16-bit patterns), others converted to float32;
  - `Raw(dtype, shape, data)`: bytes already in the wire layout, e.g. bfloat16 bit patterns held in a uint16
    array (`Raw.bf16(bits)`);
  - Python sequences of numbers (converted with numpy to float32).

The bytes are little-endian and row-major, as the wire format requires; big-endian or strided inputs are
converted (one vectorised copy).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from samplerd.v1 import sampler_pb2 as pb

DTYPE_F32 = pb.DTYPE_F32
DTYPE_F16 = pb.DTYPE_F16
DTYPE_BF16 = pb.DTYPE_BF16


@dataclass(frozen=True)
class Raw:
    """A tensor already encoded: `data` holds prod(shape) elements of `dtype` (DTYPE_F32 / DTYPE_F16 /
    DTYPE_BF16), little-endian, row-major."""

    dtype: int
    shape: tuple
    data: bytes

    @staticmethod
    def bf16(bits: Any, shape: Sequence[int] | None = None) -> "Raw":
        """bfloat16 values given as their 16-bit patterns (a uint16/int16 array, or anything numpy reads)."""
        a = np.ascontiguousarray(bits)
        if a.dtype.kind in "ui" and a.dtype.itemsize == 2:
            a = a.astype(a.dtype.newbyteorder("<"), copy=False)  # same bit patterns, little-endian
        else:
            a = a.astype("<u2")
        return Raw(DTYPE_BF16, tuple(shape if shape is not None else a.shape), a.tobytes())


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _from_torch(t: Any) -> tuple[int, tuple, bytes]:
    import torch  # only reached with a torch tensor in hand, so torch is importable

    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    shape = tuple(t.shape)
    if t.dtype == torch.bfloat16:
        # numpy has no bfloat16: reinterpret the 16-bit patterns (same bytes, no conversion).
        return DTYPE_BF16, shape, t.view(torch.int16).numpy().astype("<i2", copy=False).tobytes()
    if t.dtype == torch.float16:
        return DTYPE_F16, shape, t.numpy().astype("<f2", copy=False).tobytes()
    if t.dtype != torch.float32:
        t = t.to(torch.float32)
    return DTYPE_F32, shape, t.numpy().astype("<f4", copy=False).tobytes()


def _from_numpy(a: np.ndarray) -> tuple[int, tuple, bytes]:
    if a.dtype.name == "bfloat16":
        return DTYPE_BF16, a.shape, np.ascontiguousarray(a).view(np.uint16).astype("<u2", copy=False).tobytes()
    if a.dtype == np.float16:
        return DTYPE_F16, a.shape, np.ascontiguousarray(a, dtype="<f2").tobytes()
    if a.dtype.kind not in "fiub":
        raise TypeError(
            f"samplerd: cannot send an array of dtype {a.dtype} (expected float32, float16, "
            "bfloat16 or a real number type)"
        )
    return DTYPE_F32, a.shape, np.ascontiguousarray(a, dtype="<f4").tobytes()


def encode(x: Any) -> tuple[int, tuple, bytes]:
    """(dtype, shape, data) of `x` in the wire layout."""
    if isinstance(x, Raw):
        return x.dtype, tuple(x.shape), x.data
    if _is_torch(x):
        return _from_torch(x)
    if not isinstance(x, np.ndarray):
        x = np.asarray(x, dtype=np.float32)
    return _from_numpy(x)


def _squeeze_leading(shape: tuple, max_rank: int) -> tuple:
    # A host often holds [batch=1, ..., vocab] or [batch=1, heads, q=1, kv]: size-1 axes are dropped, outermost
    # first, until the rank fits. Axes larger than 1 are never dropped, so no data is reinterpreted.
    shape = list(shape)
    i = 0
    while len(shape) > max_rank and i < len(shape):
        if shape[i] == 1:
            shape.pop(i)
        else:
            i += 1
    return tuple(shape)


def logits_tensor(x: Any, out: pb.Tensor | None = None) -> pb.Tensor:
    """The `Step.logits` tensor ([vocab]) of `x`."""
    dtype, shape, data = encode(x)
    shape = _squeeze_leading(shape, 1)
    if len(shape) != 1:
        raise ValueError(f"samplerd: logits must have shape [vocab] (size-1 axes allowed), got {list(shape)}")
    t = out if out is not None else pb.Tensor()
    t.dtype, t.data = dtype, data
    t.shape[:] = shape
    return t


def attention_tensor(x: Any, out: pb.Tensor | None = None) -> pb.Tensor:
    """The `Step.attention` tensor ([heads, kv_len] or [layers, heads, kv_len]) of `x`."""
    dtype, shape, data = encode(x)
    shape = _squeeze_leading(shape, 3)
    if len(shape) not in (2, 3):
        raise ValueError(
            "samplerd: attention must have shape [heads, kv_len] or [layers, heads, kv_len] "
            f"(extra size-1 axes allowed), got {list(shape)}"
        )
    t = out if out is not None else pb.Tensor()
    t.dtype, t.data = dtype, data
    t.shape[:] = shape
    return t

"""Encoding of host arrays into samplerd.v1.Tensor (no server needed)."""
import time

import numpy as np
import pytest
import torch

import samplerd
from samplerd import tensors
from samplerd.v1 import sampler_pb2 as pb


def test_numpy_f32_bytes_are_little_endian_row_major():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = tensors.attention_tensor(a)
    assert t.dtype == pb.DTYPE_F32 and list(t.shape) == [2, 3]
    assert t.data == a.astype("<f4").tobytes()


def test_big_endian_and_strided_inputs_are_converted():
    a = np.arange(8, dtype=">f4")[::2]
    t = tensors.logits_tensor(a)
    assert t.data == np.array([0, 2, 4, 6], dtype="<f4").tobytes()


def test_numpy_f16_is_sent_as_f16():
    a = np.array([1.5, -2.0, np.inf], dtype=np.float16)
    t = tensors.logits_tensor(a)
    assert t.dtype == pb.DTYPE_F16 and t.data == a.astype("<f2").tobytes()


def test_float64_and_lists_become_f32():
    assert tensors.logits_tensor(np.array([0.1, 0.2])).data == np.array([0.1, 0.2], "<f4").tobytes()
    t = tensors.logits_tensor([1, 2, 3])
    assert t.dtype == pb.DTYPE_F32 and t.data == np.array([1, 2, 3], "<f4").tobytes()


def test_torch_bf16_is_sent_as_its_bit_patterns():
    x = torch.tensor([1.0, -3.5, 0.15625, -float("inf")], dtype=torch.float32)
    t = tensors.logits_tensor(x.to(torch.bfloat16))
    assert t.dtype == pb.DTYPE_BF16
    # bf16 of these values is exactly the upper half of their float32 bits.
    upper = (x.numpy().view(np.uint32) >> 16).astype("<u2")
    assert t.data == upper.tobytes()


def test_torch_f16_and_f32_and_noncontiguous():
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()  # non-contiguous view
    t = tensors.attention_tensor(x)
    assert list(t.shape) == [4, 3] and t.data == x.contiguous().numpy().tobytes()
    h = tensors.logits_tensor(torch.tensor([0.5, 1.0], dtype=torch.float16))
    assert h.dtype == pb.DTYPE_F16 and h.data == np.array([0.5, 1.0], "<f2").tobytes()


def test_raw_bf16_from_uint16_bits():
    bits = np.array([0x3F80, 0xC060], dtype=np.uint16)  # 1.0, -3.5
    t = tensors.logits_tensor(samplerd.Raw.bf16(bits))
    assert t.dtype == pb.DTYPE_BF16 and t.data == b"\x80\x3f\x60\xc0"


def test_size1_axes_dropped_only_when_rank_too_high():
    assert list(tensors.logits_tensor(np.zeros((1, 1, 5), np.float32)).shape) == [5]
    # torch's [batch=1, heads, q=1, kv]: rows are layers x heads, so [4, 1, 7] means the same as [4, 7].
    assert list(tensors.attention_tensor(np.zeros((1, 4, 1, 7), np.float32)).shape) == [4, 1, 7]
    assert list(tensors.attention_tensor(np.zeros((1, 1, 7), np.float32)).shape) == [1, 1, 7]
    with pytest.raises(ValueError, match="logits must have shape"):
        tensors.logits_tensor(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="attention must have shape"):
        tensors.attention_tensor(np.zeros((7,), np.float32))


def test_complex_dtype_rejected():
    with pytest.raises(TypeError, match="complex64"):
        tensors.logits_tensor(np.zeros(3, np.complex64))


def test_large_tensors_encode_without_element_loops():
    # A Python loop over 4M elements takes seconds; a vectorised copy takes milliseconds.
    x = torch.randn(4 << 20).to(torch.bfloat16)
    a = np.random.default_rng(0).standard_normal(4 << 20).astype(np.float16)
    t0 = time.perf_counter()
    assert len(tensors.logits_tensor(x).data) == 8 << 20
    assert len(tensors.logits_tensor(a).data) == 8 << 20
    assert time.perf_counter() - t0 < 1.0

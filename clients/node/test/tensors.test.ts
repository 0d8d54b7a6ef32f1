import assert from "node:assert/strict";
import { test } from "node:test";

import { toTensor } from "../src";
import { bf16Bits, f16Bits, fmix32 } from "../conformance/model";

test("Float32Array is sent as DTYPE_F32, its bytes unchanged", () => {
  const a = new Float32Array([1, -2.5, Infinity]);
  const t = toTensor(a, "logits");
  assert.equal(t.dtype, "DTYPE_F32");
  assert.deepEqual(t.shape, ["3"]);
  assert.deepEqual([...new Float32Array(new Uint8Array(t.data as Buffer).buffer)], [1, -2.5, Infinity]);
});

test("Uint16Array is sent as bfloat16 bit patterns; {dtype: f16} as float16", () => {
  const bits = new Uint16Array([0x3f80, 0xc060]);
  const t = toTensor(bits, "logits");
  assert.equal(t.dtype, "DTYPE_BF16");
  assert.deepEqual([...(t.data as Buffer)], [0x80, 0x3f, 0x60, 0xc0]);
  const h = toTensor({ data: new Uint16Array([0x3c00]), shape: [1], dtype: "f16" }, "logits");
  assert.equal(h.dtype, "DTYPE_F16");
});

test("a view into a larger buffer sends only its own bytes", () => {
  const big = new Float32Array([9, 1, 2, 9]);
  const t = toTensor({ data: big.subarray(1, 3), shape: [1, 2] }, "attention");
  assert.deepEqual(t.shape, ["1", "2"]);
  assert.equal((t.data as Buffer).length, 8);
  assert.equal((t.data as Buffer).readFloatLE(0), 1);
});

test("shape and byte length must agree; dtype must fit the array", () => {
  assert.throws(() => toTensor({ data: new Float32Array(6), shape: [2, 4] }, "attention"), /needs 32 bytes/);
  assert.throws(
    () => toTensor({ data: new Float32Array(2), shape: [2], dtype: "bf16" }, "logits"),
    /only be sent as f32/,
  );
  assert.throws(() => toTensor([1, 2] as unknown as Float32Array, "logits"), /must be a Float32Array/);
});

test("the scripted model's helpers: fmix32 known answers, exact f16/bf16 conversion", () => {
  assert.equal(fmix32(0), 0);
  assert.equal(fmix32(1), 0x514e28b7);
  assert.deepEqual(
    [...f16Bits(new Float32Array([1, -2, 0.015625, -Infinity, 0]))],
    [0x3c00, 0xc000, 0x2400, 0xfc00, 0],
  );
  assert.deepEqual([...bf16Bits(new Float32Array([1, -3.5]))], [0x3f80, 0xc060]);
  assert.throws(() => f16Bits(new Float32Array([0.1])), /not exact/);
  assert.throws(() => bf16Bits(new Float32Array([0.1])), /not exact/);
});

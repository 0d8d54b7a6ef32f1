// Host arrays to samplerd.v1.Tensor. The bytes of a typed array are sent as they are (no element loop, no copy
// on a little-endian host): Float32Array = DTYPE_F32, Uint16Array = DTYPE_BF16 bit patterns (or DTYPE_F16 when
// asked for with { dtype: "f16" }).
import { endianness } from "os";

import type { Tensor } from "./gen/samplerd/v1/Tensor";

export type DTypeName = "f32" | "f16" | "bf16";

// A tensor with an explicit shape (needed for attention) and, optionally, dtype. `data` may also be raw
// little-endian bytes (Buffer / Uint8Array) of the given dtype.
export interface TensorLike {
  data: Float32Array | Uint16Array | Uint8Array;
  shape: number[];
  dtype?: DTypeName;
}

export type TensorInput = Float32Array | Uint16Array | TensorLike;

const WIRE_DTYPE: Record<DTypeName, "DTYPE_F32" | "DTYPE_F16" | "DTYPE_BF16"> = {
  f32: "DTYPE_F32",
  f16: "DTYPE_F16",
  bf16: "DTYPE_BF16",
};
const ITEMSIZE: Record<DTypeName, number> = { f32: 4, f16: 2, bf16: 2 };

if (endianness() !== "LE") {
  // The wire format is little-endian and typed arrays use the host's order.
  throw new Error("samplerd: this client needs a little-endian host");
}

function bytesOf(a: Float32Array | Uint16Array | Uint8Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

export function toTensor(x: TensorInput, what: string): Tensor {
  let data: Float32Array | Uint16Array | Uint8Array;
  let shape: number[];
  let dtype: DTypeName;
  if (x instanceof Float32Array) {
    [data, shape, dtype] = [x, [x.length], "f32"];
  } else if (x instanceof Uint16Array) {
    [data, shape, dtype] = [x, [x.length], "bf16"];
  } else if (x && typeof x === "object" && "data" in x && "shape" in x) {
    data = x.data;
    shape = x.shape.map(Number);
    dtype = x.dtype ?? (x.data instanceof Uint16Array ? "bf16" : "f32");
    if (!(dtype in WIRE_DTYPE)) throw new TypeError(`samplerd: ${what}.dtype must be f32, f16 or bf16, got ${dtype}`);
    if (data instanceof Float32Array && dtype !== "f32") {
      throw new TypeError(`samplerd: ${what}: a Float32Array can only be sent as f32, not ${dtype}`);
    }
    if (data instanceof Uint16Array && dtype === "f32") {
      throw new TypeError(`samplerd: ${what}: a Uint16Array holds f16 or bf16 bit patterns, not f32`);
    }
  } else {
    throw new TypeError(`samplerd: ${what} must be a Float32Array, a Uint16Array (bf16) or {data, shape, dtype}`);
  }
  const elements = shape.reduce((a, b) => a * b, 1);
  if (elements * ITEMSIZE[dtype] !== data.byteLength) {
    throw new RangeError(
      `samplerd: ${what}: shape [${shape}] needs ${elements * ITEMSIZE[dtype]} bytes of ${dtype}, ` +
        `got ${data.byteLength}`,
    );
  }
  return { dtype: WIRE_DTYPE[dtype], shape: shape.map(String), data: bytesOf(data) };
}

// The scripted model of the conformance suite (tests/conformance/README.md, "The scripted generation"): logits
// and attention of a step are a function of (salt, step, previous token) built from integer hashing and
// power-of-two scales only, so every language produces the same bits, and every value is exactly
// representable in float16 and bfloat16.

export function fmix32(h: number): number {
  h >>>= 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

export interface ModelShape {
  vocab: number;
  layers: number;
  heads: number;
  kvBase: number;
}

export interface StepInputs {
  logits: Float32Array;
  attention: Float32Array;
  attentionShape: number[];
}

const PEAKS = [0, 40, 80, 127];

export function stepInputs(shape: ModelShape, salt: number, t: number, prev: number): StepInputs {
  const key = fmix32((salt ^ fmix32((Math.imul(t, 0x9e3779b1) + prev) >>> 0)) >>> 0);
  const scale = 2 ** -(key % 7);
  const k = new Int32Array(shape.vocab);
  for (let i = 0; i < shape.vocab; i++) k[i] = (fmix32((key ^ Math.imul(i, 0x27d4eb2d)) >>> 0) % 128) - 64;
  k[(prev * 31 + 7 + t) % shape.vocab] = PEAKS[(key >>> 8) % 4];
  if (key % 13 === 0) k.fill(0);
  const logits = new Float32Array(shape.vocab);
  for (let i = 0; i < shape.vocab; i++) logits[i] = k[i] * scale;

  const kv = shape.kvBase + t;
  const n = shape.layers * shape.heads * kv;
  const akey = fmix32((key ^ 0xa77e) >>> 0);
  const ascale = 2 ** -(akey % 5);
  const attention = new Float32Array(n);
  for (let j = 0; j < n; j++) {
    const h = fmix32((akey ^ Math.imul(j, 0x165667b1)) >>> 0);
    attention[j] = (h >>> 24) % 23 === 0 ? -Infinity : ((h % 128) - 64) * ascale;
  }
  return { logits, attention, attentionShape: [shape.layers, shape.heads, kv] };
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

// float32 -> float16 bits for values float16 holds exactly (throws otherwise: the suite never rounds).
export function f16Bits(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    f32[0] = values[i];
    const b = u32[0];
    const sign = (b >>> 16) & 0x8000;
    const exp = (b >>> 23) & 0xff;
    const mant = b & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
    } else if (exp === 0 && mant === 0) {
      out[i] = sign;
    } else {
      const e = exp - 127 + 15;
      if (e < 1 || e > 30 || (mant & 0x1fff) !== 0) throw new RangeError(`${values[i]} is not exact in float16`);
      out[i] = sign | (e << 10) | (mant >>> 13);
    }
  }
  return out;
}

// float32 -> bfloat16 bits for values bfloat16 holds exactly (the upper half of the float32 bits).
export function bf16Bits(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    if (bits[i] & 0xffff) throw new RangeError(`${values[i]} is not exact in bfloat16`);
    out[i] = bits[i] >>> 16;
  }
  return out;
}

// Reads the golden inputs: .npy version 1/2 files holding little-endian float32 in C order.
import { readFileSync } from "fs";

export interface NpyArray {
  data: Float32Array;
  shape: number[];
}

export function readNpy(path: string): NpyArray {
  const buf = readFileSync(path);
  if (buf.readUInt8(0) !== 0x93 || buf.toString("latin1", 1, 6) !== "NUMPY")
    throw new Error(`${path}: not a .npy file`);
  const major = buf.readUInt8(6);
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = buf.toString("latin1", start, start + headerLen);
  if (!/'descr':\s*'<f4'/.test(header) || !/'fortran_order':\s*False/.test(header)) {
    throw new Error(`${path}: expected little-endian float32 in C order, header ${header}`);
  }
  const m = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!m) throw new Error(`${path}: no shape in header ${header}`);
  const shape = m[1]
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const offset = start + headerLen;
  const data = new Float32Array(count);
  new Uint8Array(data.buffer).set(buf.subarray(offset, offset + 4 * count));
  return { data, shape };
}

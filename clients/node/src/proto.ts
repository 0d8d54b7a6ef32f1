// Loads proto/samplerd/v1 at run time with @grpc/proto-loader. The TypeScript types of the messages are
// generated from the same files into src/gen by scripts/gen.mjs, with the same options as LOADER_OPTIONS.
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { existsSync } from "fs";
import { join } from "path";

import type { ProtoGrpcType } from "./gen/sampler";

// Must match the flags of proto-loader-gen-types in scripts/gen.mjs: uint64 as decimal strings (seeds use all
// 64 bits), enums as their names, scalar defaults filled in (token 0 is a token), proto3 `optional` fields left
// undefined when absent.
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

function protoDir(): string {
  // dist/src/proto.js -> the package's proto/ (copied there by `npm run gen`).
  const candidates = [process.env.SAMPLERD_PROTO_DIR, join(__dirname, "..", "..", "proto")];
  for (const c of candidates) {
    if (c && existsSync(join(c, "samplerd", "v1", "sampler.proto"))) return c;
  }
  throw new Error("samplerd: proto/samplerd/v1/sampler.proto not found (run `npm run gen`, or set $SAMPLERD_PROTO_DIR)");
}

let loaded: ProtoGrpcType | undefined;

export function proto(): ProtoGrpcType {
  if (!loaded) {
    const def = protoLoader.loadSync(["samplerd/v1/sampler.proto"], { ...LOADER_OPTIONS, includeDirs: [protoDir()] });
    loaded = grpc.loadPackageDefinition(def) as unknown as ProtoGrpcType;
  }
  return loaded;
}

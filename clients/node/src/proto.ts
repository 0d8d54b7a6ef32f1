// Loads proto/samplerd/v1 (and grpc/health/v1, for Client.health) at run time with @grpc/proto-loader. The TypeScript types of the messages are
// generated from the same files into src/gen by scripts/gen.mjs, with the same options as LOADER_OPTIONS.
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { existsSync } from "fs";
import { join } from "path";

import type { HealthCheckRequest } from "./gen/grpc/health/v1/HealthCheckRequest";
import type { HealthCheckResponse__Output } from "./gen/grpc/health/v1/HealthCheckResponse";
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
  throw new Error(
    "samplerd: proto/samplerd/v1/sampler.proto not found (run `npm run gen`, or set $SAMPLERD_PROTO_DIR)",
  );
}

let loaded: ProtoGrpcType | undefined;

export function proto(): ProtoGrpcType {
  if (!loaded) {
    const def = protoLoader.loadSync(["samplerd/v1/sampler.proto"], { ...LOADER_OPTIONS, includeDirs: [protoDir()] });
    loaded = grpc.loadPackageDefinition(def) as unknown as ProtoGrpcType;
  }
  return loaded;
}

let healthCheck: grpc.MethodDefinition<HealthCheckRequest, HealthCheckResponse__Output> | undefined;

// grpc.health.v1.Health/Check, with the (de)serializers generated from proto/grpc/health/v1/health.proto.
export function healthCheckMethod(): grpc.MethodDefinition<HealthCheckRequest, HealthCheckResponse__Output> {
  if (!healthCheck) {
    const def = protoLoader.loadSync(["grpc/health/v1/health.proto"], { ...LOADER_OPTIONS, includeDirs: [protoDir()] });
    healthCheck = (def["grpc.health.v1.Health"] as grpc.ServiceDefinition)["Check"] as grpc.MethodDefinition<
      HealthCheckRequest,
      HealthCheckResponse__Output
    >;
  }
  return healthCheck;
}

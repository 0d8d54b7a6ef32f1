// Code generation for the Node client (`npm run gen`, part of `npm run build`): copies proto/samplerd/v1 and the
// vendored proto/grpc/health/v1 of the repository into this package (the loader reads it at run time) and generates the TypeScript types of its
// messages and service into src/gen with @grpc/proto-loader's proto-loader-gen-types. The options here must
// match LOADER_OPTIONS in src/proto.ts. Set $SAMPLERD_PROTO_DIR to build outside the repository.
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const source = process.env.SAMPLERD_PROTO_DIR ?? resolve(here, "..", "..", "proto");
const files = ["samplerd/v1/profile.proto", "samplerd/v1/sampler.proto", "grpc/health/v1/health.proto"];
const target = join(here, "proto");

if (!files.every((f) => existsSync(join(source, f)))) {
  if (files.every((f) => existsSync(join(target, f)))) {
    console.log(`gen: ${source} not found; using the protos already in ${target}`);
  } else {
    console.error(`gen: ${files.join(", ")} not found under ${source} (set $SAMPLERD_PROTO_DIR)`);
    process.exit(1);
  }
} else {
  for (const f of files) {
    mkdirSync(dirname(join(target, f)), { recursive: true });
    copyFileSync(join(source, f), join(target, f));
  }
}

rmSync(join(here, "src", "gen"), { recursive: true, force: true });
const bin = join(here, "node_modules", ".bin", "proto-loader-gen-types");
execFileSync(
  bin,
  [
    "--longs=String",
    "--enums=String",
    "--defaults",
    "--oneofs",
    "--includeComments",
    "--grpcLib=@grpc/grpc-js",
    "-I",
    target,
    "-O",
    join(here, "src", "gen"),
    ...files,
  ],
  { stdio: "inherit" },
);
console.log("gen: src/gen written from proto/samplerd/v1 and proto/grpc/health/v1");

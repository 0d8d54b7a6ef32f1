// TLS and the bearer token, against an in-process stand-in server (grpc-js) that records what it receives.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import * as grpc from "@grpc/grpc-js";

import { Client, proto, Unavailable } from "../src";
import type { SampleRequest__Output } from "../src/gen/samplerd/v1/SampleRequest";
import type { SampleResponse } from "../src/gen/samplerd/v1/SampleResponse";
import { tempDir } from "./server";

async function standIn(
  creds: grpc.ServerCredentials,
): Promise<{ server: grpc.Server; seen: grpc.Metadata[]; port: number }> {
  const seen: grpc.Metadata[] = [];
  const answer = (req: SampleRequest__Output): SampleResponse => ({
    results: req.steps.map((s) => ({
      sequenceId: s.sequenceId,
      step: s.step,
      token: 7,
      seed: s.seed === "0" ? "1" : s.seed,
    })),
  });
  const server = new grpc.Server();
  server.addService(proto().samplerd.v1.Sampler.service, {
    Sample: (call: grpc.ServerDuplexStream<SampleRequest__Output, SampleResponse>) => {
      seen.push(call.metadata);
      call.on("data", (req: SampleRequest__Output) => call.write(answer(req)));
      call.on("end", () => call.end());
    },
    SampleOnce: (
      call: grpc.ServerUnaryCall<SampleRequest__Output, SampleResponse>,
      cb: grpc.sendUnaryData<SampleResponse>,
    ) => cb(null, answer(call.request)),
    ListProfiles: (_: unknown, cb: grpc.sendUnaryData<object>) => cb(null, {}),
  });
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync("127.0.0.1:0", creds, (e, p) => (e ? rej(e) : res(p))),
  );
  return { server, seen, port };
}

test("the token is sent as a bearer token; none without one", async () => {
  const { server, seen, port } = await standIn(grpc.ServerCredentials.createInsecure());
  try {
    const c = new Client(`127.0.0.1:${port}`, { token: "s3cret" });
    assert.equal((await c.session({ seed: 1 }).step(new Float32Array(10))).token, 7);
    c.close();
    assert.deepEqual(seen[0].get("authorization"), ["Bearer s3cret"]);
    const plain = new Client(`127.0.0.1:${port}`);
    await plain.session({ seed: 1 }).step(new Float32Array(10));
    plain.close();
    assert.deepEqual(seen[1].get("authorization"), []);
  } finally {
    server.forceShutdown();
  }
});

test("TLS with a private CA and a server name override; without the CA the handshake fails", async () => {
  const dir = tempDir();
  try {
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=samplerd-test",
        "-addext",
        "subjectAltName=DNS:samplerd.test",
        "-keyout",
        join(dir.path, "key.pem"),
        "-out",
        join(dir.path, "cert.pem"),
      ],
      { stdio: "ignore" },
    );
    const cert = readFileSync(join(dir.path, "cert.pem"));
    const key = readFileSync(join(dir.path, "key.pem"));
    const { server, seen, port } = await standIn(
      grpc.ServerCredentials.createSsl(null, [{ cert_chain: cert, private_key: key }]),
    );
    try {
      const c = new Client(`127.0.0.1:${port}`, {
        tls: { rootCerts: cert, serverName: "samplerd.test" },
        token: "tok",
      });
      assert.equal((await c.session({ seed: 1 }).step(new Float32Array(10))).token, 7);
      c.close();
      assert.deepEqual(seen[0].get("authorization"), ["Bearer tok"]);
      const untrusted = new Client(`127.0.0.1:${port}`, { tls: true, failoverTimeoutMs: 500 });
      await assert.rejects(untrusted.session({ seed: 1 }).step(new Float32Array(10)), Unavailable);
      untrusted.close();
    } finally {
      server.forceShutdown();
    }
  } finally {
    dir.remove();
  }
});

// One session's bad step must not fail the steps other sessions pipeline on the same shared stream, a batch
// whose answers do not match commits nothing, and a closed client fails its steps with Unavailable.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import * as grpc from "@grpc/grpc-js";

import { BatchError, Client, proto, ProtocolError, Session, StepError, Unavailable } from "../src";
import type { SampleRequest__Output } from "../src/gen/samplerd/v1/SampleRequest";
import type { SampleResponse } from "../src/gen/samplerd/v1/SampleResponse";
import { Samplerd } from "./server";

const MAX_MESSAGE_BYTES = 1 << 20;
// 1.6 MB of logits: over the server's --max_message_bytes below.
const OVERSIZED = new Float32Array(400_000);

let server: Samplerd;

before(async () => {
  server = await Samplerd.start(["127.0.0.1:0"], ["--max_message_bytes", String(MAX_MESSAGE_BYTES)]);
});

after(async () => {
  await server.kill();
});

const victimLogits = (k: number) => new Float32Array(1000).map((_, i) => ((i * 7919 + k) % 1000) / 100);

// The tokens of `n` steps of victim sessions 0..count-1, one at a time on a client of their own.
async function alone(count: number): Promise<number[]> {
  const c = new Client(server.address);
  try {
    const out: number[] = [];
    for (let k = 0; k < count; k++)
      out.push((await c.session({ sequenceId: `v${k}`, seed: 1n }).step(victimLogits(k))).token);
    return out;
  } finally {
    c.close();
  }
}

// Victim steps written before and after `bad` on the one stream of `c`, all in the same tick.
async function around(c: Client, bad: () => Promise<unknown>): Promise<[PromiseSettledResult<number>[], unknown]> {
  const step = (k: number) =>
    c
      .session({ sequenceId: `v${k}`, seed: 1n })
      .step(victimLogits(k))
      .then((r) => r.token);
  const first = step(0);
  const b = bad().then(
    () => assert.fail("the bad step succeeded"),
    (e: unknown) => e,
  );
  const rest = [1, 2, 3].map(step);
  return [await Promise.allSettled([first, ...rest]), await b];
}

function assertAnswered(settled: PromiseSettledResult<number>[], expected: number[]): void {
  for (const r of settled) assert.equal(r.status, "fulfilled", String((r as PromiseRejectedResult).reason));
  assert.deepEqual(
    settled.map((r) => (r as PromiseFulfilledResult<number>).value),
    expected,
  );
}

test("a step the server refuses at stream level fails alone with StepError; the steps behind it are resent", async () => {
  const expected = await alone(4);
  const c = new Client(server.address); // maxMessageBytes left at 64 MiB: the server is the one to refuse
  try {
    const [settled, err] = await around(c, () => c.session({ sequenceId: "big", seed: 1n }).step(OVERSIZED));
    assert.ok(err instanceof StepError, String(err));
    assert.equal(err.codeName, "RESOURCE_EXHAUSTED");
    assert.equal(err.sequenceId, "big");
    assertAnswered(settled, expected);
    assert.equal(c.failovers, 0);

    const [batchSettled, batchErr] = await around(c, () =>
      c.sampleBatch([
        [c.session({ sequenceId: "b0", seed: 1n }), new Float32Array(10)],
        [c.session({ sequenceId: "b1", seed: 1n }), OVERSIZED],
      ]),
    );
    assert.ok(batchErr instanceof BatchError, String(batchErr));
    assert.ok(batchErr.results.every((r) => r instanceof StepError && r.codeName === "RESOURCE_EXHAUSTED"));
    assertAnswered(batchSettled, expected);
  } finally {
    c.close();
  }
});

test("a request over maxMessageBytes fails locally, naming its size and the limit; nothing else fails", async () => {
  const expected = await alone(4);
  const c = new Client(server.address, { maxMessageBytes: MAX_MESSAGE_BYTES });
  try {
    const big = c.session({ sequenceId: "big", seed: 1n });
    const [settled, err] = await around(c, () => big.step(OVERSIZED));
    assert.ok(err instanceof RangeError, String(err));
    assert.match(err.message, new RegExp(`${1_600_000 + 32} bytes.*${MAX_MESSAGE_BYTES}`));
    assertAnswered(settled, expected);
    assert.equal(big.stepIndex, 0);
    assert.equal(c.failovers, 0);
  } finally {
    c.close();
  }
});

test("a lone surrogate in sequenceId or profile fails locally; nothing else fails", async () => {
  const expected = await alone(4);
  const c = new Client(server.address);
  try {
    for (const options of [{ sequenceId: "user-\ud83d" }, { sequenceId: "\udc00x" }, { profile: "entropix\ud800" }]) {
      const [settled, err] = await around(c, () => c.session({ ...options, seed: 1n }).step(new Float32Array(10)));
      assert.ok(err instanceof RangeError, `${JSON.stringify(options)}: ${err}`);
      assert.match(err.message, /lone UTF-16 surrogate/);
      assertAnswered(settled, expected);
    }
    // A surrogate pair is a character like any other.
    assert.equal((await c.session({ sequenceId: "user-\ud83d\ude00", seed: 1n }).step(new Float32Array(10))).step, 0);
  } finally {
    c.close();
  }
});

// An in-process stand-in whose Sample handler is `onRequest`.
async function standIn(
  onRequest: (call: grpc.ServerDuplexStream<SampleRequest__Output, SampleResponse>, req: SampleRequest__Output) => void,
): Promise<{ target: string; stop: () => void }> {
  const srv = new grpc.Server();
  srv.addService(proto().samplerd.v1.Sampler.service, {
    Sample: (call: grpc.ServerDuplexStream<SampleRequest__Output, SampleResponse>) => {
      call.on("data", (req: SampleRequest__Output) => onRequest(call, req));
      call.on("end", () => call.end());
    },
    SampleOnce: () => {},
    ListProfiles: () => {},
  });
  const port = await new Promise<number>((res, rej) =>
    srv.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  return { target: `127.0.0.1:${port}`, stop: () => srv.forceShutdown() };
}

test("a batch answer with a mismatched echo commits no session", async () => {
  // The last two results swapped: the first one matches its request, the second does not.
  const fake = await standIn((call, req) => {
    const results = req.steps.map((s) => ({ sequenceId: s.sequenceId, step: s.step, token: 7, seed: s.seed }));
    [results[1], results[2]] = [results[2], results[1]];
    call.write({ results });
  });
  const c = new Client(fake.target);
  try {
    const sessions = [0, 1, 2].map((k) => c.session({ sequenceId: `s${k}`, seed: 1n }));
    await assert.rejects(
      c.sampleBatch(sessions.map((s) => [s, new Float32Array(10)] as [Session, Float32Array])),
      ProtocolError,
    );
    for (const s of sessions) {
      assert.equal(s.stepIndex, 0, s.sequenceId);
      assert.deepEqual(s.recentTokens, [], s.sequenceId);
    }
  } finally {
    c.close();
    fake.stop();
  }
});

test("close() fails the steps in flight and later ones with Unavailable", async () => {
  const fake = await standIn(() => {}); // reads, never answers
  const c = new Client(fake.target, { timeoutMs: 60_000, failoverTimeoutMs: 60_000 });
  try {
    const s = c.session({ sequenceId: "closed", seed: 1n });
    const inFlight = s.step(new Float32Array(10));
    await c.health().catch(() => {}); // a round trip, so the step is on the stream (the stand-in has no Health)
    c.close();
    await assert.rejects(inFlight, Unavailable);
    await assert.rejects(s.step(new Float32Array(10)), Unavailable);
    await assert.rejects(c.listProfiles(), Unavailable);
    assert.equal(s.stepIndex, 0);
  } finally {
    fake.stop();
  }
});

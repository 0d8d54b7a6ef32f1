// The samplerd client for Node: Client, Session.
//
//   const client = new Client("localhost:50051");            // or ["host-a:50051", "host-b:50051"]
//   const session = client.session({ sequenceId: "req-42", seed: 7n, profile: "entropix", recentTokens: prompt });
//   const r = await session.step(logits, { data: attention, shape: [layers, heads, kvLen] });
//   // r.token, r.regime, r.applied.temperature, r.metrics.logitsEntropy
//
// All sessions of a client share one Sample stream per endpoint; concurrent steps are pipelined on it and
// matched to their answers in order (the server answers in request order). When the endpoint fails, unanswered
// steps are sent again to the next endpoint: the session owns the step index, seed and recent tokens, so the
// tokens are those an uninterrupted run would have drawn.
import * as grpc from "@grpc/grpc-js";
import { randomUUID } from "crypto";

import type { HealthCheckResponse__Output } from "./gen/grpc/health/v1/HealthCheckResponse";
import type { ListProfilesResponse__Output } from "./gen/samplerd/v1/ListProfilesResponse";
import type { SampleRequest } from "./gen/samplerd/v1/SampleRequest";
import type { SampleResponse__Output } from "./gen/samplerd/v1/SampleResponse";
import type { SamplerClient } from "./gen/samplerd/v1/Sampler";
import type { SamplingParams } from "./gen/samplerd/v1/SamplingParams";
import type { Step } from "./gen/samplerd/v1/Step";
import type { StepResult__Output } from "./gen/samplerd/v1/StepResult";
import { healthCheckMethod, proto } from "./proto";
import { TensorInput, toTensor } from "./tensors";
import {
  BatchError,
  Params,
  paramsToWire,
  ProtocolError,
  resultFromWire,
  StepError,
  StepResult,
  Unavailable,
} from "./types";

// How many recent tokens a session sends by default; the same in every client of this repository.
export const DEFAULT_MAX_RECENT = 1024;

// Transport failures after which a step is sent again, to the next endpoint. A step is a pure function of its
// request (docs/contract.md section 5), so resending one a dead server may have answered is safe. INTERNAL covers
// streams reset mid-frame by a dying peer.
const RETRYABLE = new Set<number>([
  grpc.status.UNAVAILABLE,
  grpc.status.CANCELLED,
  grpc.status.ABORTED,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.INTERNAL,
]);

// round_robin: with a target resolving to several addresses (dns:///name:port, ipv4:a:p,b:p) new streams go to a
// ready address. Reconnect backoff capped at 2 s so a restarted replica is used again soon.
const CHANNEL_OPTIONS = {
  "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
  "grpc.enable_retries": 0,
  "grpc.initial_reconnect_backoff_ms": 200,
  "grpc.max_reconnect_backoff_ms": 2000,
};

export interface TlsOptions {
  rootCerts?: Buffer; // PEM; undefined = the system roots
  certChain?: Buffer; // PEM client certificate, for mutual TLS
  privateKey?: Buffer; // PEM key of certChain
  serverName?: string; // name checked in the server's certificate, for addresses not in it
}

export interface ClientOptions {
  tls?: boolean | TlsOptions | grpc.ChannelCredentials;
  token?: string; // sent as `authorization: Bearer <token>` on every call
  timeoutMs?: number; // how long a step may take before its endpoint is given up on (10 s)
  failoverTimeoutMs?: number; // how long a failing step is resent, endpoint after endpoint (10 s)
  // The largest request sent and answer accepted: 64 MiB, the default of the server's --max_message_bytes; set it
  // to the server's flag so a step too large for the server fails alone, here, instead of ending the shared stream.
  maxMessageBytes?: number;
}

export interface SessionOptions {
  sequenceId?: string; // undefined = a random one
  seed?: bigint | number | string; // 0 = the server picks one on the first step; the session then sends it
  profile?: string; // "" = the server's default
  params?: Params; // overrides sent with every step
  recentTokens?: number[]; // the prompt's tail, oldest first
  maxRecent?: number; // how many recent tokens each step carries
  topLogprobs?: number;
  startStep?: number;
}

export interface StepOptions {
  params?: Params; // replaces the session's overrides for this step
  topLogprobs?: number;
  timeoutMs?: number;
}

export type BatchItem = [Session, TensorInput] | [Session, TensorInput, TensorInput | undefined];

class StreamEnded extends Error {
  readonly code = grpc.status.UNAVAILABLE;
  constructor(message = "the server ended the Sample stream with steps unanswered") {
    super(message);
  }
}

class DeadlineExceeded extends Error {
  readonly code = grpc.status.DEADLINE_EXCEEDED;
}

// The server ended the stream with a status that is not a transport failure (docs/contract.md, stream-level
// problems): it answered every request before the one it refused and ran none after it, so the refused request
// is the oldest unanswered one (StreamMux.refuse). Step and sampleBatch turn it into StepError / BatchError.
class Refused extends Error {
  constructor(
    readonly code: number,
    readonly details: string,
  ) {
    super(`${grpc.status[code] ?? code}: ${details}`);
  }
}

// A request on the stream of a refused one, unanswered: it is sent again on a fresh stream of the same endpoint
// (its answer depends only on the request). Not a failure of the endpoint.
class Resend extends Error {
  constructor() {
    super("the Sample stream ended at an earlier request the server refused");
  }
}

interface Waiter {
  resolve: (r: SampleResponse__Output) => void;
  reject: (e: unknown) => void;
  bytes: number; // the encoded request's size
}

// gRPC's own size limit ends the call as soon as the oversized message arrives, possibly before the server wrote
// the answers to the requests ahead of it; its status names the refused message's size.
const TOO_LARGE = /larger than max \((\d+) vs\. \d+\)/;

// One Sample stream shared by many callers; answers are matched to waiters in order. Once broken, the waiters
// fail (a transport failure: all with its error; a refusal: the oldest with it, the others to be resent) and the
// mux is replaced. Requests are written already encoded: _send encodes each once to check its size.
class StreamMux {
  broken: Error | null = null;
  private readonly pending: Waiter[] = [];
  private readonly call: grpc.ClientDuplexStream<Buffer, SampleResponse__Output>;

  constructor(stub: SamplerClient, metadata: grpc.Metadata) {
    const method = proto().samplerd.v1.Sampler.service.Sample;
    this.call = stub.makeBidiStreamRequest(
      method.path,
      (b: Buffer) => b,
      method.responseDeserialize as (b: Buffer) => SampleResponse__Output,
      metadata,
    );
    this.call.on("data", (resp: SampleResponse__Output) => {
      const w = this.pending.shift();
      if (!w) {
        this.abort(new ProtocolError("samplerd: a response arrived with no request pending"));
        return;
      }
      w.resolve(resp);
    });
    this.call.on("error", (e: grpc.ServiceError) => (isRetryable(e) ? this.fail(e) : this.refuse(e)));
    this.call.on("end", () => this.fail(new StreamEnded()));
  }

  submit(request: Buffer): Promise<SampleResponse__Output> {
    if (this.broken) return Promise.reject(this.broken);
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject, bytes: request.length });
      this.call.write(request);
    });
  }

  fail(e: Error): void {
    if (!this.broken) this.broken = e;
    for (const w of this.pending.splice(0)) w.reject(e);
  }

  // The refused request is the oldest unanswered one, except for a size refusal, which names its size; every
  // other waiter is resent (one ahead of an oversized request may have been run, but its answer is lost).
  private refuse(e: grpc.ServiceError): void {
    if (!this.broken) this.broken = new Resend();
    const details = e.details ?? e.message;
    const waiters = this.pending.splice(0);
    const tooLarge = e.code === grpc.status.RESOURCE_EXHAUSTED ? TOO_LARGE.exec(details) : null;
    const refused = Math.max(0, tooLarge ? waiters.findIndex((w) => w.bytes === Number(tooLarge[1])) : 0);
    waiters.forEach((w, i) => w.reject(i === refused ? new Refused(e.code, details) : new Resend()));
  }

  abort(e: Error): void {
    this.fail(e);
    this.call.cancel();
  }

  close(): void {
    this.fail(new StreamEnded("the client closed the Sample stream"));
    this.call.end();
    this.call.cancel();
  }
}

class Endpoint {
  readonly stub: SamplerClient;
  private mux_: StreamMux | null = null;

  constructor(
    readonly target: string,
    creds: grpc.ChannelCredentials,
    options: grpc.ChannelOptions,
    private readonly metadata: () => grpc.Metadata,
  ) {
    const Sampler = proto().samplerd.v1.Sampler;
    this.stub = new Sampler(target, creds, options);
  }

  mux(): StreamMux {
    if (!this.mux_ || this.mux_.broken) this.mux_ = new StreamMux(this.stub, this.metadata());
    return this.mux_;
  }

  close(): void {
    this.mux_?.close();
    this.mux_ = null;
    this.stub.close();
  }
}

function isRetryable(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  return typeof code === "number" && RETRYABLE.has(code);
}

function describe(e: unknown): string {
  const x = e as { code?: number; details?: string; message?: string };
  if (typeof x?.code === "number") return `${grpc.status[x.code] ?? x.code}: ${x.details ?? x.message}`;
  return String(e);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const MAX_UINT64 = (1n << 64n) - 1n;

// A seed as the wire's uint64 decimal string. Out-of-range values are refused rather than wrapped: the wire keeps
// the low 64 bits, so the draw would use another seed than the session reports.
function seedToWire(seed: bigint | number | string | undefined): string {
  let v: bigint;
  try {
    v = BigInt(seed ?? 0);
  } catch {
    throw new RangeError(`samplerd: seed must be an integer in [0, 2^64), got ${String(seed)}`);
  }
  if (v < 0n || v > MAX_UINT64) throw new RangeError(`samplerd: seed must be in [0, 2^64), got ${v}`);
  return v.toString();
}

// A lone UTF-16 surrogate has no UTF-8 form: protobuf would send bytes the server cannot parse, and it refuses
// the whole message at stream level.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function checkUtf8(value: string, what: string): void {
  const m = LONE_SURROGATE.exec(value);
  if (m) {
    throw new RangeError(
      `samplerd: ${what} holds a lone UTF-16 surrogate (\\u${m[0].charCodeAt(0).toString(16)} at index ` +
        `${m.index}), which is not valid UTF-8`,
    );
  }
}

// A refused step echoes at most this many bytes of its sequence_id (cut at a UTF-8 character boundary).
const MAX_SEQUENCE_ID_BYTES = 256;

// Whether `r` answers the step of `sequenceId`: the id itself, or for a refused step, its cut echo.
function echoes(r: StepResult__Output, sequenceId: string): boolean {
  if (r.sequenceId === sequenceId) return true;
  const full = Buffer.from(sequenceId, "utf8");
  const echo = Buffer.from(r.sequenceId, "utf8");
  return (
    r.error != null &&
    full.length > MAX_SEQUENCE_ID_BYTES &&
    echo.length >= MAX_SEQUENCE_ID_BYTES - 3 &&
    echo.length <= MAX_SEQUENCE_ID_BYTES &&
    full.subarray(0, echo.length).equals(echo)
  );
}

// One generation (sequence): the step index, seed and recent tokens. One step at a time per session.
export class Session {
  readonly sequenceId: string;
  readonly profile: string;
  readonly maxRecent: number;
  private seed_: string;
  private stepIndex_: number;
  private recent: number[];
  private readonly params?: SamplingParams;
  private readonly topLogprobs: number;

  constructor(
    private readonly client: Client,
    o: SessionOptions,
  ) {
    this.sequenceId = o.sequenceId || randomUUID().replace(/-/g, "");
    this.profile = o.profile ?? "";
    this.maxRecent = o.maxRecent ?? DEFAULT_MAX_RECENT;
    if (this.maxRecent < 0) throw new RangeError(`samplerd: maxRecent must be >= 0, got ${this.maxRecent}`);
    this.seed_ = seedToWire(o.seed);
    this.stepIndex_ = o.startStep ?? 0;
    if (!Number.isSafeInteger(this.stepIndex_) || this.stepIndex_ < 0) {
      throw new RangeError(`samplerd: startStep must be an integer >= 0, got ${o.startStep}`);
    }
    this.recent = this.maxRecent ? (o.recentTokens ?? []).slice(-this.maxRecent) : [];
    this.params = o.params ? paramsToWire(o.params) : undefined;
    this.topLogprobs = o.topLogprobs ?? 0;
  }

  // 0n until the server picked one, then that seed.
  get seed(): bigint {
    return BigInt(this.seed_);
  }
  // Index of the next step.
  get stepIndex(): number {
    return this.stepIndex_;
  }
  // Oldest first.
  get recentTokens(): number[] {
    return [...this.recent];
  }

  // Appends tokens the host chose itself (prompt, forced tokens).
  extend(tokens: number[]): void {
    this.recent.push(...tokens);
    this.trim();
  }

  // Samples the next token from `logits` ([vocab]) and optional pre-softmax `attention` ([heads, kvLen] or
  // [layers, heads, kvLen], given with its shape). Throws StepError if the server rejects the step (the session
  // does not advance), Unavailable if no endpoint answers.
  async step(logits: TensorInput, attention?: TensorInput, options: StepOptions = {}): Promise<StepResult> {
    const st = this.makeStep(logits, attention, options);
    let resp: SampleResponse__Output;
    try {
      resp = await this.client._send({ steps: [st] }, options.timeoutMs);
    } catch (e) {
      throw e instanceof Refused ? this.refusal(e) : e;
    }
    return this.commit(resp.results[0]);
  }

  /** @internal The StepError of this session's pending step when the server refused its whole request. */
  refusal(e: Refused): StepError {
    return new StepError(e.code, "", e.details, this.sequenceId, this.stepIndex_);
  }

  /** @internal */
  makeStep(logits: TensorInput, attention: TensorInput | undefined, options: StepOptions = {}): Step {
    checkUtf8(this.sequenceId, "sequenceId");
    checkUtf8(this.profile, "profile");
    const st: Step = {
      sequenceId: this.sequenceId,
      step: String(this.stepIndex_),
      logits: toTensor(logits, "logits"),
      recentTokens: this.recent,
      profile: this.profile,
      seed: this.seed_,
      topLogprobs: options.topLogprobs ?? this.topLogprobs,
    };
    if ((st.logits!.shape as string[]).length !== 1) {
      throw new RangeError(`samplerd: logits must have shape [vocab], got [${st.logits!.shape}]`);
    }
    if (attention !== undefined) {
      st.attention = toTensor(attention, "attention");
      const rank = (st.attention.shape as string[]).length;
      if (rank !== 2 && rank !== 3) {
        throw new RangeError(
          `samplerd: attention must have shape [heads, kvLen] or [layers, heads, kvLen], ` +
            `got [${st.attention.shape}]`,
        );
      }
    }
    const p = options.params ? paramsToWire(options.params) : this.params;
    if (p) st.params = p;
    return st;
  }

  /** @internal Throws ProtocolError unless `r` answers this session's next step. */
  checkEcho(r: StepResult__Output): void {
    if (!echoes(r, this.sequenceId) || Number(r.step) !== this.stepIndex_) {
      throw new ProtocolError(
        `samplerd: expected the result of "${this.sequenceId}" step ${this.stepIndex_}, ` +
          `got "${r.sequenceId}" step ${r.step}`,
      );
    }
  }

  /** @internal */
  commit(r: StepResult__Output): StepResult {
    this.checkEcho(r);
    if (r.error) {
      throw new StepError(r.error.code, r.error.field, r.error.message, this.sequenceId, this.stepIndex_);
    }
    if (this.seed_ === "0") this.seed_ = r.seed;
    this.stepIndex_++;
    if (this.maxRecent) {
      this.recent = [...this.recent, r.token];
      this.trim();
    }
    return resultFromWire(r);
  }

  private trim(): void {
    if (this.recent.length > this.maxRecent) this.recent = this.recent.slice(this.recent.length - this.maxRecent);
  }
}

// A samplerd client. `target`: one gRPC target ("host:port", "unix:/path", "dns:///name:port" - several addresses
// are balanced round-robin) or a list of targets tried in turn when one fails.
export class Client {
  readonly endpoints: string[];
  private readonly eps: Endpoint[];
  private active = 0;
  private failovers_ = 0;
  private readonly timeoutMs: number;
  private readonly failoverTimeoutMs: number;
  private readonly token?: string;
  private readonly maxMessageBytes: number;
  private readonly encodeRequest: (r: SampleRequest) => Buffer;
  private closed = false;

  constructor(target: string | string[], options: ClientOptions = {}) {
    this.endpoints = typeof target === "string" ? [target] : [...target];
    if (!this.endpoints.length || this.endpoints.some((t) => typeof t !== "string" || !t)) {
      throw new TypeError(`samplerd: target must be a non-empty gRPC target or a list of them`);
    }
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.failoverTimeoutMs = options.failoverTimeoutMs ?? 10_000;
    this.token = options.token;
    const maxBytes = options.maxMessageBytes ?? 64 << 20;
    this.maxMessageBytes = maxBytes;
    this.encodeRequest = proto().samplerd.v1.Sampler.service.Sample.requestSerialize;
    const channelOptions: grpc.ChannelOptions = {
      ...CHANNEL_OPTIONS,
      "grpc.max_receive_message_length": maxBytes,
      "grpc.max_send_message_length": maxBytes,
    };
    let creds: grpc.ChannelCredentials;
    const tls = options.tls;
    if (!tls) {
      creds = grpc.credentials.createInsecure();
    } else if (tls instanceof grpc.ChannelCredentials) {
      creds = tls;
    } else {
      const t: TlsOptions = tls === true ? {} : tls;
      creds = grpc.credentials.createSsl(t.rootCerts ?? null, t.privateKey ?? null, t.certChain ?? null);
      if (t.serverName) channelOptions["grpc.ssl_target_name_override"] = t.serverName;
    }
    this.eps = this.endpoints.map((e) => new Endpoint(e, creds, channelOptions, () => this.metadata()));
  }

  // The target the next step goes to.
  get activeEndpoint(): string {
    return this.endpoints[this.active];
  }
  // How many times this client moved on after a failure.
  get failovers(): number {
    return this.failovers_;
  }

  session(options: SessionOptions = {}): Session {
    return new Session(this, options);
  }

  // One request carrying a step of each session; results in order, each accepted session advances. If some
  // steps are rejected, throws BatchError after advancing the others. An answer that does not match its request
  // throws ProtocolError and no session advances.
  async sampleBatch(items: BatchItem[], options: { timeoutMs?: number } = {}): Promise<StepResult[]> {
    const sessions = items.map((it) => it[0]);
    if (new Set(sessions).size !== sessions.length)
      throw new RangeError("samplerd: a session appears twice in one batch");
    const steps = items.map(([s, logits, attention]) => s.makeStep(logits, attention));
    let resp: SampleResponse__Output;
    try {
      resp = await this._send({ steps }, options.timeoutMs);
    } catch (e) {
      if (e instanceof Refused) throw new BatchError(sessions.map((s) => s.refusal(e)));
      throw e;
    }
    // Every echo first: committing as we went would advance sessions whose results the ProtocolError then loses.
    sessions.forEach((s, i) => s.checkEcho(resp.results[i]));
    const results = sessions.map((s, i) => {
      try {
        return s.commit(resp.results[i]);
      } catch (e) {
        if (e instanceof StepError) return e;
        throw e;
      }
    });
    if (results.some((r) => r instanceof StepError)) throw new BatchError(results);
    return results as StepResult[];
  }

  /** @internal */
  _send(request: SampleRequest, timeoutMs?: number): Promise<SampleResponse__Output> {
    const timeout = timeoutMs ?? this.timeoutMs;
    if (this.closed) return Promise.reject(closedError());
    // Over the limit the server would end the stream, failing every step pipelined on it; refused here instead.
    const message = this.encodeRequest(request);
    if (message.length > this.maxMessageBytes) {
      return Promise.reject(
        new RangeError(
          `samplerd: the request is ${message.length} bytes, over maxMessageBytes (${this.maxMessageBytes}); ` +
            `it must also fit the server's --max_message_bytes`,
        ),
      );
    }
    return this.retry(async (ep) => {
      const mux = ep.mux();
      let timer: NodeJS.Timeout | undefined;
      try {
        const resp = await new Promise<SampleResponse__Output>((resolve, reject) => {
          timer = setTimeout(() => {
            const e = new DeadlineExceeded(`no answer from ${ep.target} within ${timeout} ms`);
            mux.abort(e);
            reject(e);
          }, timeout);
          mux.submit(message).then(resolve, reject);
        });
        if (resp.results.length !== (request.steps ?? []).length) {
          throw new ProtocolError(
            `samplerd: ${request.steps?.length} steps sent, ${resp.results.length} results received`,
          );
        }
        return resp;
      } finally {
        clearTimeout(timer);
      }
    });
  }

  // The failover loop of every call: `call` on the active endpoint; after a retryable failure the client moves
  // to the next endpoint and tries again, with a short backoff, until the call has been failing for
  // failoverTimeoutMs and every endpoint was tried.
  // A request behind a refused one is resent at once to the same endpoint, which has not failed.
  private async retry<T>(call: (ep: Endpoint) => Promise<T>): Promise<T> {
    let firstFailure = 0;
    for (let attempt = 0; ; attempt++) {
      const index = this.active;
      try {
        if (this.closed) throw closedError();
        return await call(this.eps[index]);
      } catch (e) {
        if (this.closed) throw closedError();
        if (e instanceof Resend) {
          attempt--;
          continue;
        }
        if (!isRetryable(e)) throw e;
        this.failed(index);
        const now = Date.now();
        firstFailure = firstFailure || now;
        if (attempt + 1 >= this.eps.length && now - firstFailure >= this.failoverTimeoutMs) {
          throw new Unavailable(
            `samplerd: no endpoint of ${this.endpoints.join(", ")} answered for ` +
              `${((now - firstFailure) / 1000).toFixed(1)} s: ${describe(e)}`,
            e,
          );
        }
      }
      await sleep(Math.min(500, 20 * 2 ** attempt));
    }
  }

  private failed(index: number): void {
    if (this.active === index) {
      this.active = (index + 1) % this.eps.length;
      this.failovers_++;
    }
  }

  private metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    if (this.token) md.set("authorization", `Bearer ${this.token}`);
    return md;
  }

  // A unary call, `fn` given the endpoint and a node-style callback, through retry().
  private unary<T>(fn: (ep: Endpoint, done: (e: grpc.ServiceError | null, v?: T) => void) => void): Promise<T> {
    return this.retry((ep) => new Promise<T>((resolve, reject) => fn(ep, (e, v) => (e ? reject(e) : resolve(v as T)))));
  }

  // The server's profiles with every parameter value, and the default profile's name.
  listProfiles(timeoutMs = 10_000): Promise<ListProfilesResponse__Output> {
    return this.unary((ep, done) =>
      ep.stub.ListProfiles({}, this.metadata(), { deadline: Date.now() + timeoutMs }, done),
    );
  }

  // grpc.health.v1 status of the active endpoint: "SERVING", "NOT_SERVING", ...
  health(service = "", timeoutMs = 5_000): Promise<string> {
    const check = healthCheckMethod();
    return this.unary<string>((ep, done) =>
      ep.stub.makeUnaryRequest(
        check.path,
        check.requestSerialize,
        check.responseDeserialize,
        { service },
        this.metadata(),
        { deadline: Date.now() + timeoutMs },
        (e: grpc.ServiceError | null, r?: HealthCheckResponse__Output) => done(e, r && String(r.status)),
      ),
    );
  }

  // Steps in flight and later calls fail with Unavailable.
  close(): void {
    this.closed = true;
    for (const ep of this.eps) ep.close();
  }
}

function closedError(): Unavailable {
  return new Unavailable("samplerd: the client is closed");
}

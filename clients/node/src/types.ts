// Plain views of samplerd's answers (StepResult and its parts) and the errors the client throws.
import { status as Status } from "@grpc/grpc-js";

import type { SamplingParams } from "./gen/samplerd/v1/SamplingParams";
import type { SamplingParams__Output } from "./gen/samplerd/v1/SamplingParams";
import type { StepResult__Output } from "./gen/samplerd/v1/StepResult";

export type Regime = "UNSPECIFIED" | "ARGMAX" | "CLARIFY" | "EXPLORE" | "RESAMPLE" | "ADAPTIVE" | "FIXED";

// Sampling parameters; undefined = not set. In a result, what the draw used; as an override, unset fields keep
// the profile's value.
export interface Params {
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  frequencyPenalty?: number;
  presencePenalty?: number;
  nAdaptiveSamples?: number;
  clarifyingToken?: number;
  logitBias?: Record<number, number>;
}

export const PARAM_FIELDS = [
  "temperature",
  "topK",
  "topP",
  "minP",
  "repetitionPenalty",
  "frequencyPenalty",
  "presencePenalty",
  "nAdaptiveSamples",
  "clarifyingToken",
] as const;

// Entropies in bits, varentropies in bits^2; the attention ones are undefined without attention.
export interface Metrics {
  logitsEntropy?: number;
  logitsVarentropy?: number;
  attnEntropy?: number;
  attnVarentropy?: number;
  agreement?: number;
  interactionStrength?: number;
}

export const METRIC_FIELDS = [
  "logitsEntropy",
  "logitsVarentropy",
  "attnEntropy",
  "attnVarentropy",
  "agreement",
  "interactionStrength",
] as const;

export interface TokenLogprob {
  token: number;
  logprob: number;
}

// One answered step. `logprob` in nats under the unmodified logits; `seed` is the one the draw used.
export interface StepResult {
  sequenceId: string;
  step: number;
  token: number;
  logprob: number;
  regime: Regime;
  applied: Params;
  metrics: Metrics;
  top: TokenLogprob[];
  seed: bigint;
  profile: string;
  serverMicros: number;
}

export function paramsFromWire(p: SamplingParams__Output | null): Params {
  const out: Params = {};
  if (!p) return out;
  for (const f of PARAM_FIELDS) {
    if (p[f] !== undefined && p[f] !== null) out[f] = p[f];
  }
  if (p.logitBias && Object.keys(p.logitBias).length) out.logitBias = { ...p.logitBias };
  return out;
}

export function paramsToWire(p: Params): SamplingParams {
  const out: SamplingParams = {};
  for (const k of Object.keys(p)) {
    if (k !== "logitBias" && !(PARAM_FIELDS as readonly string[]).includes(k)) {
      throw new TypeError(
        `samplerd: unknown sampling parameter ${k}; expected one of ${PARAM_FIELDS.join(", ")}, logitBias`,
      );
    }
  }
  for (const f of PARAM_FIELDS) {
    if (p[f] !== undefined) out[f] = p[f];
  }
  if (p.logitBias) out.logitBias = { ...p.logitBias };
  return out;
}

export function resultFromWire(r: StepResult__Output): StepResult {
  const metrics: Metrics = {};
  for (const f of METRIC_FIELDS) {
    const v = r.metrics?.[f];
    if (v !== undefined && v !== null) metrics[f] = v;
  }
  return {
    sequenceId: r.sequenceId,
    step: Number(r.step),
    token: r.token,
    logprob: r.logprob,
    regime: String(r.regime).replace(/^REGIME_/, "") as Regime,
    applied: paramsFromWire(r.applied),
    metrics,
    top: r.top.map((t) => ({ token: t.token, logprob: t.logprob })),
    seed: BigInt(r.seed),
    profile: r.profile,
    serverMicros: r.serverMicros,
  };
}

export class SamplerdError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

// The server rejected one step (StepResult.error), or ended the stream refusing the request that carried it (a
// stream-level status: RESOURCE_EXHAUSTED, INVALID_ARGUMENT, UNAUTHENTICATED ...; `field` is then ""). The
// session did not advance.
export class StepError extends SamplerdError {
  readonly codeName: string;
  constructor(
    readonly code: number,
    readonly field: string,
    readonly detail: string,
    readonly sequenceId: string,
    readonly step: number,
  ) {
    // field is empty when the server refused the step's whole request (a stream-level status).
    super(
      `samplerd rejected step ${step} of "${sequenceId}": ${Status[code] ?? code} ${field ? field + ": " : ""}${detail}`,
    );
    this.codeName = Status[code] ?? String(code);
  }
}

// Some steps of a sampleBatch were rejected; `results` holds a StepResult (that session advanced) or a StepError
// per item, in order.
export class BatchError extends SamplerdError {
  constructor(readonly results: (StepResult | StepError)[]) {
    const errors = results.filter((r): r is StepError => r instanceof StepError);
    super(`${errors.length} of ${results.length} steps rejected; first: ${errors[0]?.message}`);
  }
}

// No endpoint answered for failoverTimeoutMs. `cause` is the last transport error.
export class Unavailable extends SamplerdError {
  constructor(
    message: string,
    readonly cause?: unknown,
  ) {
    super(message);
  }
}

// The answer does not match the request (count or order of results).
export class ProtocolError extends SamplerdError {}

// samplerd: Node/TypeScript client of the samplerd entropy-adaptive sampling service (samplerd.v1.Sampler).
export { Client, Session, DEFAULT_MAX_RECENT } from "./client";
export type { BatchItem, ClientOptions, SessionOptions, StepOptions, TlsOptions } from "./client";
export { toTensor } from "./tensors";
export type { DTypeName, TensorInput, TensorLike } from "./tensors";
export { BatchError, ProtocolError, SamplerdError, StepError, Unavailable } from "./types";
export type { Metrics, Params, Regime, StepResult, TokenLogprob } from "./types";
export { proto } from "./proto";
export type { ProtoGrpcType } from "./gen/sampler";

package samplerd

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"

	pb "samplerd.dev/samplerd/gen/samplerd/v1"
)

// StepResult is one answered step. Logprob is in nats under the unmodified logits; Applied holds the
// parameters the draw used (a nil field was not set); Seed is the one the draw used.
type StepResult struct {
	SequenceID   string
	Step         uint64
	Token        int32
	Logprob      float32
	Regime       pb.Regime
	Applied      *pb.SamplingParams
	Metrics      *pb.Metrics
	Top          []TokenLogprob
	Seed         uint64
	Profile      string
	ServerMicros uint32
}

// TokenLogprob is a token with its log-probability (nats) under the unmodified logits.
type TokenLogprob struct {
	Token   int32
	Logprob float32
}

// RegimeName is the regime without its prefix: "ARGMAX", "CLARIFY", ...
func (r *StepResult) RegimeName() string {
	return strings.TrimPrefix(r.Regime.String(), "REGIME_")
}

func resultFromProto(r *pb.StepResult) *StepResult {
	out := &StepResult{
		SequenceID: r.SequenceId, Step: r.Step, Token: r.Token, Logprob: r.Logprob, Regime: r.Regime,
		Applied: r.Applied, Metrics: r.Metrics, Seed: r.Seed, Profile: r.Profile, ServerMicros: r.ServerMicros,
	}
	if out.Applied == nil {
		out.Applied = &pb.SamplingParams{}
	}
	if out.Metrics == nil {
		out.Metrics = &pb.Metrics{}
	}
	for _, t := range r.Top {
		out.Top = append(out.Top, TokenLogprob{Token: t.Token, Logprob: t.Logprob})
	}
	return out
}

// StepError is a step the server rejected (StepResult.error), or whose message it refused for the whole stream
// (a status such as RESOURCE_EXHAUSTED for a message over its --max_message_bytes; Field is then empty); the
// session did not advance.
type StepError struct {
	Code       codes.Code
	Field      string
	Message    string
	SequenceID string
	Step       uint64
}

func (e *StepError) Error() string {
	return fmt.Sprintf("samplerd rejected step %d of %q: %v %s: %s", e.Step, e.SequenceID, e.Code, e.Field, e.Message)
}

// BatchError reports the rejected steps of a SampleBatch. Results has, per item in order, the StepResult of an
// accepted step (that session advanced) or nil, and Errors the StepError of a rejected one or nil.
type BatchError struct {
	Results []*StepResult
	Errors  []*StepError
}

func (e *BatchError) Error() string {
	n, first := 0, ""
	for _, x := range e.Errors {
		if x != nil {
			if n == 0 {
				first = x.Error()
			}
			n++
		}
	}
	return fmt.Sprintf("%d of %d steps rejected; first: %s", n, len(e.Errors), first)
}

// ErrUnavailable wraps the last transport error when no endpoint answered within FailoverTimeout.
var ErrUnavailable = errors.New("samplerd: no endpoint answered")

// ErrProtocol is an answer that does not match its request (count or order of results).
var ErrProtocol = errors.New("samplerd: answer does not match the request")

// ErrInvalidArgument is a step the client refuses before sending anything (never retried): a malformed tensor, a
// sequence id or profile that is not valid UTF-8, a request over Options.MaxMessageBytes, a session twice in one
// batch.
var ErrInvalidArgument = errors.New("samplerd: invalid argument")

// ErrClosed is what steps return once Client.Close was called, in flight or after; it wraps ErrUnavailable.
var ErrClosed = fmt.Errorf("%w: the client is closed", ErrUnavailable)

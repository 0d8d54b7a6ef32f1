// Command samplerd-conformance is the Go client's conformance driver: it sends tests/conformance/requests.json
// through the samplerd Go client and writes one record per answered step in the suite's canonical format
// (tests/conformance/README.md).
//
//	samplerd-conformance --target 127.0.0.1:50051 --requests tests/conformance/requests.json \
//	    --golden tests/golden --out go.txt
//
// With --shm SOCKET (the server's --shm_socket; --target then a unix: address of the same server) the client
// sends every request over the shared-memory plane (Options.Shm); a client that fell back to bytes fails the run.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"

	"samplerd.dev/samplerd"
	pb "samplerd.dev/samplerd/gen/samplerd/v1"
	"samplerd.dev/samplerd/internal/scripted"
)

type wireParams map[string]float64

type goldenRequest struct {
	ID           string     `json:"id"`
	Logits       string     `json:"logits"`
	Attention    *string    `json:"attention"`
	DType        string     `json:"dtype"`
	RecentTokens []int32    `json:"recent_tokens"`
	Seed         string     `json:"seed"`
	Profile      string     `json:"profile"`
	Params       wireParams `json:"params"`
	TopLogprobs  int32      `json:"top_logprobs"`
}

type generation struct {
	Steps     int      `json:"steps"`
	Vocab     int      `json:"vocab"`
	Layers    int      `json:"layers"`
	Heads     int      `json:"heads"`
	KVBase    int      `json:"kv_base"`
	DTypes    []string `json:"dtypes"`
	Sequences []struct {
		ID      string     `json:"id"`
		Profile string     `json:"profile"`
		Seed    string     `json:"seed"`
		Salt    uint32     `json:"salt"`
		Prompt  []int32    `json:"prompt"`
		Params  wireParams `json:"params"`
	} `json:"sequences"`
}

func toParams(p wireParams) *pb.SamplingParams {
	if p == nil {
		return nil
	}
	out := &pb.SamplingParams{}
	for k, v := range p {
		f, i := float32(v), int32(v)
		switch k {
		case "temperature":
			out.Temperature = &f
		case "top_k":
			out.TopK = &i
		case "top_p":
			out.TopP = &f
		case "min_p":
			out.MinP = &f
		case "repetition_penalty":
			out.RepetitionPenalty = &f
		case "frequency_penalty":
			out.FrequencyPenalty = &f
		case "presence_penalty":
			out.PresencePenalty = &f
		case "n_adaptive_samples":
			out.NAdaptiveSamples = &i
		case "clarifying_token":
			out.ClarifyingToken = &i
		default:
			log.Fatalf("unknown parameter %q", k)
		}
	}
	return out
}

func hexf(v *float32) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%08x", math.Float32bits(*v))
}

func intf(v *int32) string {
	if v == nil {
		return "-"
	}
	return strconv.Itoa(int(*v))
}

func record(id string, r *samplerd.StepResult) string {
	a, m := r.Applied, r.Metrics
	applied := []string{hexf(a.Temperature), intf(a.TopK), hexf(a.TopP), hexf(a.MinP), hexf(a.RepetitionPenalty),
		hexf(a.FrequencyPenalty), hexf(a.PresencePenalty), intf(a.NAdaptiveSamples), intf(a.ClarifyingToken)}
	metrics := []string{hexf(m.LogitsEntropy), hexf(m.LogitsVarentropy), hexf(m.AttnEntropy), hexf(m.AttnVarentropy),
		hexf(m.Agreement), hexf(m.InteractionStrength)}
	var top []string
	for _, t := range r.Top {
		lp := t.Logprob
		top = append(top, fmt.Sprintf("%d:%s", t.Token, hexf(&lp)))
	}
	lp := r.Logprob
	return strings.Join([]string{id, fmt.Sprintf("step=%d", r.Step), fmt.Sprintf("token=%d", r.Token),
		"regime=" + r.RegimeName(), "logprob=" + hexf(&lp), "applied=" + strings.Join(applied, ","),
		"metrics=" + strings.Join(metrics, ","), "top=" + strings.Join(top, ","), fmt.Sprintf("seed=%d", r.Seed),
		"profile=" + r.Profile}, " ")
}

func encode(values []float32, shape []int64, dtype string) samplerd.Tensor {
	switch dtype {
	case "f32":
		return samplerd.F32(values, shape...)
	case "f16":
		return samplerd.F16(scripted.F16Bits(values), shape...)
	case "bf16":
		return samplerd.BF16(scripted.BF16Bits(values), shape...)
	}
	log.Fatalf("unknown dtype %q", dtype)
	return samplerd.Tensor{}
}

// countReferences is a stream interceptor counting the tensors the client's requests carry by reference.
func countReferences(n *int64) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer,
		opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		return &countingStream{ClientStream: s, n: n}, err
	}
}

type countingStream struct {
	grpc.ClientStream
	n *int64
}

func (s *countingStream) SendMsg(m interface{}) error {
	if req, ok := m.(*pb.SampleRequest); ok {
		for _, st := range req.Steps {
			if st.LogitsRef != nil {
				atomic.AddInt64(s.n, 1)
			}
			if st.AttentionRef != nil {
				atomic.AddInt64(s.n, 1)
			}
		}
	}
	return s.ClientStream.SendMsg(m)
}

type npy struct {
	data  []float32
	shape []int64
}

func main() {
	target := flag.String("target", "", "samplerd address")
	requests := flag.String("requests", "", "requests.json")
	golden := flag.String("golden", "", "the golden folder (tests/golden)")
	out := flag.String("out", "", "where to write the records")
	shmSocket := flag.String("shm", "", "the server's --shm_socket: send every request over the shared-memory plane")
	flag.Parse()
	if *target == "" || *requests == "" || *golden == "" || *out == "" {
		log.Fatal("usage: samplerd-conformance --target ADDR --requests FILE --golden DIR --out FILE")
	}
	raw, err := os.ReadFile(*requests)
	if err != nil {
		log.Fatal(err)
	}
	var doc struct {
		Golden     []goldenRequest `json:"golden"`
		Generation generation      `json:"generation"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		log.Fatal(err)
	}
	opts := samplerd.Options{}
	var references int64
	if *shmSocket != "" {
		opts.Shm = &samplerd.ShmOptions{Socket: *shmSocket, Name: "conformance-go"}
		opts.DialOptions = []grpc.DialOption{grpc.WithStreamInterceptor(countReferences(&references))}
	}
	client, err := samplerd.NewClient([]string{*target}, opts)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	checkShm := func() {
		if err := client.ShmStatus(); *shmSocket != "" && err != nil {
			log.Fatalf("the shared-memory plane is not in use: %v", err)
		}
	}
	checkShm()
	ctx := context.Background()
	cache := map[string]npy{}
	load := func(f string) npy {
		if a, ok := cache[f]; ok {
			return a
		}
		d, s, err := scripted.ReadNpy(filepath.Join(*golden, f))
		if err != nil {
			log.Fatal(err)
		}
		cache[f] = npy{d, s}
		return cache[f]
	}
	var lines []string
	for _, g := range doc.Golden {
		seed, err := strconv.ParseUint(g.Seed, 10, 64)
		if err != nil {
			log.Fatal(err)
		}
		s := client.Session(samplerd.SessionOptions{SequenceID: g.ID, Seed: seed, Profile: g.Profile,
			Params: toParams(g.Params), RecentTokens: g.RecentTokens, TopLogprobs: g.TopLogprobs})
		l := load(g.Logits)
		var att *samplerd.Tensor
		if g.Attention != nil {
			a := load(*g.Attention)
			t := encode(a.data, a.shape, g.DType)
			att = &t
		}
		r, err := s.Step(ctx, encode(l.data, l.shape, g.DType), att)
		var se *samplerd.StepError
		switch {
		case errors.As(err, &se):
			lines = append(lines, fmt.Sprintf("%s step=%d error=%d field=%s", g.ID, se.Step, int(se.Code), se.Field))
		case err != nil:
			log.Fatalf("%s: %v", g.ID, err)
		default:
			lines = append(lines, record(g.ID, r))
		}
	}

	gen := doc.Generation
	shape := scripted.Shape{Vocab: gen.Vocab, Layers: gen.Layers, Heads: gen.Heads, KVBase: gen.KVBase}
	sessions := make([]*samplerd.Session, len(gen.Sequences))
	prev := make([]int32, len(gen.Sequences))
	for i, q := range gen.Sequences {
		seed, err := strconv.ParseUint(q.Seed, 10, 64)
		if err != nil {
			log.Fatal(err)
		}
		sessions[i] = client.Session(samplerd.SessionOptions{SequenceID: q.ID, Seed: seed, Profile: q.Profile,
			Params: toParams(q.Params), RecentTokens: q.Prompt})
		prev[i] = q.Prompt[len(q.Prompt)-1]
	}
	for t := 0; t < gen.Steps; t++ {
		dtype := gen.DTypes[t%len(gen.DTypes)]
		items := make([]samplerd.BatchItem, len(sessions))
		for i, q := range gen.Sequences {
			logits, attention, ashape := scripted.StepInputs(shape, q.Salt, t, prev[i])
			att := encode(attention, ashape, dtype)
			items[i] = samplerd.BatchItem{Session: sessions[i], Logits: encode(logits, nil, dtype), Attention: &att}
		}
		results, err := client.SampleBatch(ctx, items)
		if err != nil {
			log.Fatalf("generation step %d: %v", t, err)
		}
		for i, r := range results {
			lines = append(lines, record(gen.Sequences[i].ID, r))
			prev[i] = r.Token
		}
	}
	checkShm()
	if *shmSocket != "" {
		// A driver that silently sent bytes would prove nothing about the plane.
		if atomic.LoadInt64(&references) == 0 {
			log.Fatal("no tensor was sent by reference")
		}
		fmt.Fprintf(os.Stderr, "go: %d tensors sent by reference\n", atomic.LoadInt64(&references))
	}
	if err := os.WriteFile(*out, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		log.Fatal(err)
	}
}

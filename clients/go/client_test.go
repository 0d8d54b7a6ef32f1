package samplerd_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"samplerd.dev/samplerd"
	pb "samplerd.dev/samplerd/gen/samplerd/v1"
	"samplerd.dev/samplerd/internal/scripted"
)

const clarifyToken = 2564

func f32p(v float32) *float32 { return &v }
func i32p(v int32) *int32     { return &v }

func TestClientHealthAndProfiles(t *testing.T) {
	s := startServer(t, nil)
	c := newClient(t, []string{s.Address()}, samplerd.Options{})
	ctx := context.Background()
	h, err := c.Health(ctx, "")
	if err != nil || h != "SERVING" {
		t.Fatalf("health = %q, %v", h, err)
	}
	p, err := c.ListProfiles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.DefaultProfile != "entropix" || len(p.Profiles) < 3 {
		t.Fatalf("profiles: default %q, %d profiles", p.DefaultProfile, len(p.Profiles))
	}
	if code := s.kill(15); code != 0 {
		t.Fatalf("samplerd exit code on SIGTERM = %d", code)
	}
}

func TestSessionStepKeepsRecentTokens(t *testing.T) {
	s := startServer(t, nil)
	c := newClient(t, []string{s.Address()}, samplerd.Options{})
	sess := c.Session(samplerd.SessionOptions{SequenceID: "keeps-recent", Seed: 11, RecentTokens: []int32{5, 6, 7},
		MaxRecent: samplerd.Int(6), TopLogprobs: 3})
	var tokens []int32
	prev := int32(1)
	for i := 0; i < 5; i++ {
		logits, att, ashape := scripted.StepInputs(shape, 3, i, prev)
		a := samplerd.F32(att, ashape...)
		r, err := sess.Step(context.Background(), samplerd.F32(logits), &a)
		if err != nil {
			t.Fatal(err)
		}
		if r.Step != uint64(i) || r.SequenceID != "keeps-recent" || r.Token < 0 || int(r.Token) >= shape.Vocab {
			t.Fatalf("result %+v", r)
		}
		if r.Logprob > 0 || r.Metrics.LogitsEntropy == nil || r.Metrics.AttnEntropy == nil || len(r.Top) != 3 ||
			r.Top[0].Logprob < r.Top[1].Logprob || r.Seed != 11 || r.Profile != "entropix" {
			t.Fatalf("result %+v", r)
		}
		switch r.RegimeName() {
		case "ARGMAX", "CLARIFY", "EXPLORE", "RESAMPLE", "ADAPTIVE":
		default:
			t.Fatalf("regime %s", r.RegimeName())
		}
		tokens = append(tokens, r.Token)
		prev = r.Token
	}
	want := append([]int32{5, 6, 7}, tokens...)[2:]
	if sess.StepIndex() != 5 || !reflect.DeepEqual(sess.RecentTokens(), want) {
		t.Fatalf("step index %d, recent %v, want %v", sess.StepIndex(), sess.RecentTokens(), want)
	}
}

func TestRecentTokensReachTheServer(t *testing.T) {
	s := startServer(t, nil)
	c := newClient(t, []string{s.Address()}, samplerd.Options{})
	sess := c.Session(samplerd.SessionOptions{SequenceID: "clarify", Seed: 3})
	uniform := make([]float32, 32000)
	r0, err := sess.Step(context.Background(), samplerd.F32(uniform), nil)
	if err != nil || r0.RegimeName() != "CLARIFY" || r0.Token != clarifyToken {
		t.Fatalf("first step %+v, %v", r0, err)
	}
	r1, err := sess.Step(context.Background(), samplerd.F32(uniform), nil)
	if err != nil || r1.RegimeName() != "CLARIFY" || r1.Applied.GetTemperature() <= 0 {
		t.Fatalf("second step %+v, %v", r1, err)
	}
	if !reflect.DeepEqual(sess.RecentTokens(), []int32{clarifyToken, r1.Token}) {
		t.Fatalf("recent %v", sess.RecentTokens())
	}
}

func TestDeterminismAndBigSeeds(t *testing.T) {
	s := startServer(t, nil)
	c := newClient(t, []string{s.Address()}, samplerd.Options{})
	a := generate(t, c.Session(samplerd.SessionOptions{SequenceID: "det", Seed: 99}), 30, nil)
	b := generate(t, c.Session(samplerd.SessionOptions{SequenceID: "det", Seed: 99}), 30, nil)
	d := generate(t, c.Session(samplerd.SessionOptions{SequenceID: "det", Seed: 100}), 30, nil)
	if !reflect.DeepEqual(a, b) || reflect.DeepEqual(a, d) {
		t.Fatalf("same seed %v vs %v; other seed %v", a, b, d)
	}
	big := uint64(18446744073709551557)
	sess := c.Session(samplerd.SessionOptions{SequenceID: "big", Seed: big})
	logits, _, _ := scripted.StepInputs(shape, 1, 0, 1)
	r, err := sess.Step(context.Background(), samplerd.F32(logits), nil)
	if err != nil || r.Seed != big {
		t.Fatalf("big seed: %+v %v", r, err)
	}
	seedless := c.Session(samplerd.SessionOptions{SequenceID: "seedless"})
	r0, err := seedless.Step(context.Background(), samplerd.F32(logits), nil)
	if err != nil || r0.Seed == 0 || seedless.Seed() != r0.Seed {
		t.Fatalf("server seed not adopted: %+v %v", r0, err)
	}
}

type goldenCase struct {
	Name         string             `json:"name"`
	Logits       string             `json:"logits"`
	Attention    *string            `json:"attention"`
	RecentTokens []int32            `json:"recent_tokens"`
	Seed         uint64             `json:"seed"`
	ExpectError  *string            `json:"expect_error"`
	Metrics      map[string]float64 `json:"metrics"`
	Argmax       int32              `json:"argmax"`
	LogprobOf    []struct {
		Logprob float64 `json:"logprob"`
	} `json:"logprob_of"`
	Regimes map[string]struct {
		Regime string `json:"regime"`
		Action string `json:"action"`
	} `json:"regimes"`
}

func goldenCases(t *testing.T) []goldenCase {
	raw, err := os.ReadFile(filepath.Join(goldenDir(), "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cases []goldenCase `json:"cases"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Cases
}

func TestGoldenRegimesAndBF16(t *testing.T) {
	s := startServer(t, nil)
	c := newClient(t, []string{s.Address()}, samplerd.Options{})
	checked := 0
	for _, g := range goldenCases(t) {
		if g.ExpectError != nil {
			continue
		}
		logits, lshape, err := scripted.ReadNpy(filepath.Join(goldenDir(), g.Logits))
		if err != nil {
			t.Fatal(err)
		}
		var att, attBF16 *samplerd.Tensor
		var attData []float32
		var ashape []int64
		if g.Attention != nil {
			attData, ashape, err = scripted.ReadNpy(filepath.Join(goldenDir(), *g.Attention))
			if err != nil {
				t.Fatal(err)
			}
			a := samplerd.F32(attData, ashape...)
			att = &a
		}
		sess := c.Session(samplerd.SessionOptions{SequenceID: g.Name, Seed: g.Seed, RecentTokens: g.RecentTokens, TopLogprobs: 5})
		r, err := sess.Step(context.Background(), samplerd.F32(logits, lshape...), att)
		if err != nil {
			t.Fatalf("%s: %v", g.Name, err)
		}
		if r.RegimeName() != g.Regimes["entropix"].Regime {
			t.Errorf("%s: regime %s, want %s", g.Name, r.RegimeName(), g.Regimes["entropix"].Regime)
		}
		if g.Regimes["entropix"].Action == "greedy" && r.Token != g.Argmax {
			t.Errorf("%s: token %d, want argmax %d", g.Name, r.Token, g.Argmax)
		}
		for i, tl := range r.Top {
			if math.Abs(float64(tl.Logprob)-g.LogprobOf[i].Logprob) > 1e-3 {
				t.Errorf("%s: top[%d] logprob %v, want %v", g.Name, i, tl.Logprob, g.LogprobOf[i].Logprob)
			}
		}
		checked++
		if g.Name == "bf16_exact_32k" {
			b := samplerd.BF16(scripted.BF16Bits(attData), ashape...)
			attBF16 = &b
			sb := c.Session(samplerd.SessionOptions{SequenceID: g.Name, Seed: g.Seed, RecentTokens: g.RecentTokens, TopLogprobs: 5})
			rb, err := sb.Step(context.Background(), samplerd.BF16(scripted.BF16Bits(logits)), attBF16)
			if err != nil {
				t.Fatal(err)
			}
			rb.ServerMicros, r.ServerMicros = 0, 0
			if rb.Token != r.Token || !proto.Equal(rb.Metrics, r.Metrics) || !proto.Equal(rb.Applied, r.Applied) {
				t.Errorf("bf16 %+v differs from f32 %+v", rb, r)
			}
			want := g.Metrics["attn_entropy"]
			if got := float64(rb.Metrics.GetAttnEntropy()); math.Abs(got-want) > 1e-6+1e-4*math.Abs(want) {
				t.Errorf("bf16 attn_entropy %v, want %v", got, want)
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d golden cases checked", checked)
	}
}

func TestASequenceIDOver256BytesIsAStepErrorNotAProtocolError(t *testing.T) {
	s := startServer(t, nil)
	c := newClient(t, []string{s.Address()}, samplerd.Options{})
	// The server echoes only its first 256 bytes (cut at a character boundary: "é" is 2 bytes).
	sess := c.Session(samplerd.SessionOptions{SequenceID: strings.Repeat("a", 255) + strings.Repeat("é", 10), Seed: 5})
	_, err := sess.Step(context.Background(), samplerd.F32(make([]float32, 100)), nil)
	var se *samplerd.StepError
	if !errors.As(err, &se) || se.Code != codes.InvalidArgument || se.Field != "sequence_id" {
		t.Fatalf("want an INVALID_ARGUMENT StepError on sequence_id, got %v", err)
	}
}

func TestRejectedStepAndParams(t *testing.T) {
	s := startServer(t, nil)
	c := newClient(t, []string{s.Address()}, samplerd.Options{})
	ctx := context.Background()
	sess := c.Session(samplerd.SessionOptions{SequenceID: "reject", Seed: 5, RecentTokens: []int32{1}})
	bad := make([]float32, 100)
	for i := range bad {
		bad[i] = float32(math.Inf(-1))
	}
	_, err := sess.Step(ctx, samplerd.F32(bad), nil)
	var se *samplerd.StepError
	if !errors.As(err, &se) || se.Code != codes.InvalidArgument || se.Field == "" {
		t.Fatalf("want an INVALID_ARGUMENT StepError, got %v", err)
	}
	if sess.StepIndex() != 0 || !reflect.DeepEqual(sess.RecentTokens(), []int32{1}) {
		t.Fatal("a rejected step advanced the session")
	}
	if r, err := sess.Step(ctx, samplerd.F32(make([]float32, 100)), nil); err != nil || r.Step != 0 {
		t.Fatalf("retry: %+v %v", r, err)
	}
	logits, _, _ := scripted.StepInputs(shape, 5, 3, 4)
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	greedy := c.Session(samplerd.SessionOptions{SequenceID: "greedy", Seed: 1, Profile: "fixed",
		Params: &pb.SamplingParams{Temperature: f32p(0)}})
	r, err := greedy.Step(ctx, samplerd.F32(logits), nil)
	if err != nil || r.RegimeName() != "FIXED" || r.Applied.GetTemperature() != 0 || int(r.Token) != best {
		t.Fatalf("greedy: %+v %v (argmax %d)", r, err, best)
	}
	topk := c.Session(samplerd.SessionOptions{SequenceID: "topk", Seed: 1, Profile: "fixed"})
	r, err = topk.StepWithOptions(ctx, samplerd.F32(logits), nil, samplerd.StepOptions{Params: &pb.SamplingParams{TopK: i32p(1)}})
	if err != nil || r.Applied.GetTopK() != 1 || int(r.Token) != best {
		t.Fatalf("top_k 1: %+v %v", r, err)
	}
	if _, err := sess.Step(ctx, samplerd.Tensor{DType: pb.DType_DTYPE_F32, Shape: []int64{3}, Data: make([]byte, 8)}, nil); err == nil {
		t.Fatal("a shape/length mismatch was not caught")
	}
}

func TestSampleBatchAndConcurrency(t *testing.T) {
	s := startServer(t, nil)
	c := newClient(t, []string{s.Address()}, samplerd.Options{})
	ctx := context.Background()
	profiles := []string{"entropix", "entropix-frog", "fixed"}
	var batch, single []*samplerd.Session
	for i, p := range profiles {
		id := string(rune('a' + i))
		batch = append(batch, c.Session(samplerd.SessionOptions{SequenceID: id, Seed: 7, Profile: p}))
		single = append(single, c.Session(samplerd.SessionOptions{SequenceID: id, Seed: 7, Profile: p}))
	}
	prev := []int32{1, 2, 3}
	for step := 0; step < 10; step++ {
		items := make([]samplerd.BatchItem, len(batch))
		for i := range batch {
			logits, att, ashape := scripted.StepInputs(shape, 9, step, prev[i])
			a := samplerd.F32(att, ashape...)
			items[i] = samplerd.BatchItem{Session: batch[i], Logits: samplerd.F32(logits), Attention: &a}
		}
		rb, err := c.SampleBatch(ctx, items)
		if err != nil {
			t.Fatal(err)
		}
		for i := range single {
			r, err := single[i].Step(ctx, items[i].Logits, items[i].Attention)
			if err != nil || r.Token != rb[i].Token || rb[i].SequenceID != batch[i].SequenceID() {
				t.Fatalf("step %d seq %d: batch %+v single %+v %v", step, i, rb[i], r, err)
			}
			prev[i] = r.Token
		}
	}
	good := c.Session(samplerd.SessionOptions{SequenceID: "good", Seed: 1})
	badS := c.Session(samplerd.SessionOptions{SequenceID: "bad", Seed: 1})
	nan := []float32{float32(math.NaN()), 0}
	_, err := c.SampleBatch(ctx, []samplerd.BatchItem{{Session: good, Logits: samplerd.F32(make([]float32, 10))},
		{Session: badS, Logits: samplerd.F32(nan)}})
	var be *samplerd.BatchError
	if !errors.As(err, &be) || be.Results[0] == nil || be.Errors[1] == nil || good.StepIndex() != 1 || badS.StepIndex() != 0 {
		t.Fatalf("partial rejection: %v", err)
	}

	// Concurrent sessions pipelined on one stream give what sequential ones give.
	together := make([][]int32, 4)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			together[i] = generate(t, c.Session(samplerd.SessionOptions{SequenceID: string(rune('p' + i)), Seed: uint64(i + 1)}), 20, nil)
		}(i)
	}
	wg.Wait()
	for i := 0; i < 4; i++ {
		alone := generate(t, c.Session(samplerd.SessionOptions{SequenceID: string(rune('p' + i)), Seed: uint64(i + 1)}), 20, nil)
		if !reflect.DeepEqual(alone, together[i]) {
			t.Fatalf("session %d: concurrent %v, alone %v", i, together[i], alone)
		}
	}
}

func TestUnixAndDNSTargets(t *testing.T) {
	sock := filepath.Join(socketDir(t), "s.sock")
	s := startServer(t, []string{"unix:" + sock, "127.0.0.1:0"})
	_, port, _ := cutLast(s.Addresses[1], ":")
	var runs [][]int32
	for _, target := range []string{"unix:" + sock, "dns:///localhost:" + port} {
		c := newClient(t, []string{target}, samplerd.Options{})
		runs = append(runs, generate(t, c.Session(samplerd.SessionOptions{SequenceID: "targets", Seed: 4}), 10, nil))
	}
	if !reflect.DeepEqual(runs[0], runs[1]) {
		t.Fatalf("unix %v, dns %v", runs[0], runs[1])
	}
}

func cutLast(s, sep string) (string, string, bool) {
	for i := len(s) - len(sep); i >= 0; i-- {
		if s[i:i+len(sep)] == sep {
			return s[:i], s[i+len(sep):], true
		}
	}
	return s, "", false
}

func TestMaxRecentZeroMeansNoneAndUnsetTheDefault(t *testing.T) {
	c := newClient(t, []string{"127.0.0.1:1"}, samplerd.Options{})
	long := make([]int32, samplerd.DefaultMaxRecent+10)
	for i := range long {
		long[i] = int32(i)
	}
	if n := len(c.Session(samplerd.SessionOptions{RecentTokens: long}).RecentTokens()); n != samplerd.DefaultMaxRecent {
		t.Fatalf("unset MaxRecent kept %d tokens, want %d", n, samplerd.DefaultMaxRecent)
	}
	if got := c.Session(samplerd.SessionOptions{RecentTokens: long, MaxRecent: samplerd.Int(0)}).RecentTokens(); len(got) != 0 {
		t.Fatalf("MaxRecent 0 kept %v, want none", got)
	}
	two := c.Session(samplerd.SessionOptions{RecentTokens: []int32{1, 2, 3}, MaxRecent: samplerd.Int(2)})
	if got := two.RecentTokens(); !reflect.DeepEqual(got, []int32{2, 3}) {
		t.Fatalf("MaxRecent 2 kept %v", got)
	}
}

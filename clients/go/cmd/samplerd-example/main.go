// Command samplerd-example samples a few tokens from random logits and attention through the Go client.
//
//	clients/go/go.sh run ./cmd/samplerd-example --target localhost:50051
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math/rand"
	"strings"

	"samplerd.dev/samplerd"
)

func main() {
	targets := flag.String("target", "localhost:50051", "comma-separated samplerd endpoints (tried in turn on failure)")
	flag.Parse()
	client, err := samplerd.NewClient(strings.Split(*targets, ","), samplerd.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	session := client.Session(samplerd.SessionOptions{SequenceID: "demo", Seed: 42, Profile: "entropix",
		RecentTokens: []int32{1, 2, 3}})
	rng := rand.New(rand.NewSource(0))
	logits := make([]float32, 32000)
	scores := make([]float32, 4*8*16)
	for i := 0; i < 5; i++ {
		for j := range logits {
			logits[j] = float32(rng.NormFloat64())
		}
		for j := range scores {
			scores[j] = float32(rng.NormFloat64())
		}
		attention := samplerd.F32(scores, 4, 8, 16) // [layers, heads, kv_len]
		r, err := session.Step(context.Background(), samplerd.F32(logits), &attention)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(r.Token, r.RegimeName(), r.Applied.GetTemperature(), r.Metrics.GetLogitsEntropy())
	}
}

package samplerd_test

import (
	"context"
	"errors"
	"reflect"
	"syscall"
	"testing"
	"time"

	"samplerd.dev/samplerd"
)

const failoverSteps = 60

func reference(t *testing.T, address string) []int32 {
	c := newClient(t, []string{address}, samplerd.Options{})
	return generate(t, c.Session(samplerd.SessionOptions{SequenceID: "failover", Seed: 2024}), failoverSteps, nil)
}

func TestFailoverEndpointList(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			a := startServer(t, nil, "--drain_seconds", "1")
			b := startServer(t, nil)
			expected := reference(t, b.Address())
			c := newClient(t, []string{a.Address(), b.Address()}, samplerd.Options{Timeout: 5 * time.Second})
			code := 0
			got := generate(t, c.Session(samplerd.SessionOptions{SequenceID: "failover", Seed: 2024}), failoverSteps, func(i int) {
				if i == 20 {
					if c.ActiveEndpoint() != a.Address() {
						t.Fatalf("active endpoint %s before the kill", c.ActiveEndpoint())
					}
					code = a.kill(sig)
				}
			})
			if c.Failovers() < 1 || c.ActiveEndpoint() != b.Address() {
				t.Fatalf("failovers %d, active %s", c.Failovers(), c.ActiveEndpoint())
			}
			if want := map[syscall.Signal]int{syscall.SIGKILL: -1, syscall.SIGTERM: 0}[sig]; code != want {
				t.Fatalf("exit code %d, want %d", code, want)
			}
			if !reflect.DeepEqual(got, expected) {
				t.Fatalf("tokens after failover differ:\n got %v\nwant %v", got, expected)
			}
		})
	}
}

func TestFailoverRoundRobinTarget(t *testing.T) {
	a := startServer(t, nil)
	_, port, _ := cutLast(a.Address(), ":")
	b := startServer(t, []string{"127.0.0.2:" + port})
	expected := reference(t, a.Address())
	c := newClient(t, []string{"ipv4:127.0.0.1:" + port + ",127.0.0.2:" + port}, samplerd.Options{Timeout: 5 * time.Second})
	got := generate(t, c.Session(samplerd.SessionOptions{SequenceID: "failover", Seed: 2024}), failoverSteps, func(i int) {
		switch i {
		case 15:
			a.kill(syscall.SIGKILL)
		case 30:
			startServer(t, []string{"127.0.0.1:" + port})
			b.kill(syscall.SIGKILL)
		}
	})
	// Every step answered with the uninterrupted run's token. Not a failover count: when a replica dies between
	// two steps, round_robin moves the next stream to a live address and no step is ever resent.
	if !reflect.DeepEqual(got, expected) {
		t.Fatalf("tokens after failover differ:\n got %v\nwant %v", got, expected)
	}
}

func TestAllEndpointsDead(t *testing.T) {
	a := startServer(t, nil)
	address := a.Address()
	a.kill(syscall.SIGKILL)
	c := newClient(t, []string{address}, samplerd.Options{Timeout: time.Second, FailoverTimeout: time.Second})
	t0 := time.Now()
	_, err := c.Session(samplerd.SessionOptions{Seed: 1}).Step(context.Background(), samplerd.F32(make([]float32, 10)), nil)
	if !errors.Is(err, samplerd.ErrUnavailable) || time.Since(t0) > 10*time.Second {
		t.Fatalf("want ErrUnavailable within 10 s, got %v after %v", err, time.Since(t0))
	}
}

package samplerd_test

import (
	"os/exec"
	"regexp"
	"testing"
)

// The README's `go.sh run ./cmd/samplerd-example` (go.sh's environment is inherited): five steps answered.
func TestExampleCommandRuns(t *testing.T) {
	s := startServer(t, nil)
	out, err := exec.Command("go", "run", "./cmd/samplerd-example", "--target", s.Address()).CombinedOutput()
	if err != nil {
		t.Fatalf("samplerd-example: %v\n%s", err, out)
	}
	if n := len(regexp.MustCompile(`(?m)^\d+ [A-Z]+ `).FindAll(out, -1)); n != 5 {
		t.Fatalf("samplerd-example printed %d of 5 steps:\n%s", n, out)
	}
}

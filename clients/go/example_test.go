package samplerd_test

import (
	"os"
	"os/exec"
	"regexp"
	"testing"
)

// The README's `go.sh run ./cmd/samplerd-example`: five steps answered. Under go.sh the module file it wrote is
// $SAMPLERD_GO_MODFILE, and the rest of its environment is inherited.
func TestExampleCommandRuns(t *testing.T) {
	s := startServer(t, nil)
	args := []string{"run"}
	if modfile := os.Getenv("SAMPLERD_GO_MODFILE"); modfile != "" {
		args = append(args, "-mod=mod", "-modfile="+modfile)
	}
	args = append(args, "./cmd/samplerd-example", "--target", s.Address())
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("samplerd-example: %v\n%s", err, out)
	}
	if n := len(regexp.MustCompile(`(?m)^\d+ [A-Z]+ `).FindAll(out, -1)); n != 5 {
		t.Fatalf("samplerd-example printed %d of 5 steps:\n%s", n, out)
	}
}

package scripted

import (
	"math"
	"reflect"
	"testing"
)

func TestFmix32KnownAnswers(t *testing.T) {
	if Fmix32(0) != 0 || Fmix32(1) != 0x514e28b7 {
		t.Fatalf("fmix32(0) = %#x, fmix32(1) = %#x", Fmix32(0), Fmix32(1))
	}
}

func TestExactHalfConversions(t *testing.T) {
	in := []float32{1, -2, 0.015625, float32(math.Inf(-1)), 0}
	if got := F16Bits(in); !reflect.DeepEqual(got, []uint16{0x3c00, 0xc000, 0x2400, 0xfc00, 0}) {
		t.Fatalf("f16 %#x", got)
	}
	if got := BF16Bits([]float32{1, -3.5}); !reflect.DeepEqual(got, []uint16{0x3f80, 0xc060}) {
		t.Fatalf("bf16 %#x", got)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("0.1 was converted to float16 without complaint")
		}
	}()
	F16Bits([]float32{0.1})
}

func TestStepInputsAreHalfExactAndShaped(t *testing.T) {
	s := Shape{Vocab: 4096, Layers: 2, Heads: 4, KVBase: 16}
	for step := 0; step < 20; step++ {
		logits, att, shape := StepInputs(s, 1, step, int32(step*3))
		if len(logits) != 4096 || !reflect.DeepEqual(shape, []int64{2, 4, int64(16 + step)}) || len(att) != 2*4*(16+step) {
			t.Fatalf("step %d: %d logits, attention %v", step, len(logits), shape)
		}
		F16Bits(logits)
		BF16Bits(att)
	}
}

// Package scripted is the conformance suite's scripted model (tests/conformance/README.md, "The scripted
// generation"): logits and attention of a step are a function of (salt, step, previous token) built from integer
// hashing and power-of-two scales only, so every language produces the same bits, and every value is exactly
// representable in float16 and bfloat16.
package scripted

import (
	"fmt"
	"math"
)

// Fmix32 is MurmurHash3's 32-bit finaliser.
func Fmix32(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// Shape is the model's size.
type Shape struct {
	Vocab, Layers, Heads, KVBase int
}

var peaks = [4]int32{0, 40, 80, 127}

// StepInputs returns the logits [vocab] and the attention [layers, heads, kvBase + t] of step t.
func StepInputs(s Shape, salt uint32, t int, prev int32) (logits, attention []float32, attentionShape []int64) {
	key := Fmix32(salt ^ Fmix32(uint32(t)*0x9e3779b1+uint32(prev)))
	scale := float32(math.Ldexp(1, -int(key%7)))
	k := make([]int32, s.Vocab)
	for i := range k {
		k[i] = int32(Fmix32(key^(uint32(i)*0x27d4eb2d))%128) - 64
	}
	k[(int(prev)*31+7+t)%s.Vocab] = peaks[(key>>8)%4]
	if key%13 == 0 {
		for i := range k {
			k[i] = 0
		}
	}
	logits = make([]float32, s.Vocab)
	for i, v := range k {
		logits[i] = float32(v) * scale
	}

	kv := s.KVBase + t
	akey := Fmix32(key ^ 0xa77e)
	ascale := float32(math.Ldexp(1, -int(akey%5)))
	attention = make([]float32, s.Layers*s.Heads*kv)
	for j := range attention {
		h := Fmix32(akey ^ (uint32(j) * 0x165667b1))
		if (h>>24)%23 == 0 {
			attention[j] = float32(math.Inf(-1))
		} else {
			attention[j] = float32(int32(h%128)-64) * ascale
		}
	}
	return logits, attention, []int64{int64(s.Layers), int64(s.Heads), int64(kv)}
}

// F16Bits converts values float16 holds exactly to their bit patterns; it panics on any other value (the suite
// never rounds).
func F16Bits(values []float32) []uint16 {
	out := make([]uint16, len(values))
	for i, v := range values {
		b := math.Float32bits(v)
		sign := uint16(b>>16) & 0x8000
		exp := int(b>>23) & 0xff
		mant := b & 0x7fffff
		switch {
		case exp == 0xff:
			out[i] = sign | 0x7c00
			if mant != 0 {
				out[i] |= 0x200
			}
		case exp == 0 && mant == 0:
			out[i] = sign
		default:
			e := exp - 127 + 15
			if e < 1 || e > 30 || mant&0x1fff != 0 {
				panic(fmt.Sprintf("scripted: %v is not exact in float16", v))
			}
			out[i] = sign | uint16(e)<<10 | uint16(mant>>13)
		}
	}
	return out
}

// BF16Bits converts values bfloat16 holds exactly to their bit patterns (the upper half of the float32 bits).
func BF16Bits(values []float32) []uint16 {
	out := make([]uint16, len(values))
	for i, v := range values {
		b := math.Float32bits(v)
		if b&0xffff != 0 {
			panic(fmt.Sprintf("scripted: %v is not exact in bfloat16", v))
		}
		out[i] = uint16(b >> 16)
	}
	return out
}

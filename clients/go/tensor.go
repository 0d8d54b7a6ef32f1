package samplerd

import (
	"fmt"
	"unsafe"

	pb "samplerd.dev/samplerd/gen/samplerd/v1"
)

// Tensor is a tensor in the wire layout (dense, row-major, little-endian). Build one with F32, F16 or BF16;
// those reinterpret the slice's memory (no element loop, no copy until the message is marshalled), so the
// slice must not change until the step returns.
type Tensor struct {
	DType pb.DType
	Shape []int64
	Data  []byte
}

var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

func asBytes[T float32 | uint16](values []T) []byte {
	if !littleEndian {
		panic("samplerd: this client needs a little-endian host (the wire format is little-endian)")
	}
	if len(values) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&values[0])), len(values)*int(unsafe.Sizeof(values[0])))
}

func shapeOr(shape []int64, n int) []int64 {
	if len(shape) == 0 {
		return []int64{int64(n)}
	}
	return shape
}

// F32 is a DTYPE_F32 tensor over values; shape defaults to [len(values)].
func F32(values []float32, shape ...int64) Tensor {
	return Tensor{DType: pb.DType_DTYPE_F32, Shape: shapeOr(shape, len(values)), Data: asBytes(values)}
}

// BF16 is a DTYPE_BF16 tensor over bfloat16 bit patterns (the upper halves of float32 values).
func BF16(bits []uint16, shape ...int64) Tensor {
	return Tensor{DType: pb.DType_DTYPE_BF16, Shape: shapeOr(shape, len(bits)), Data: asBytes(bits)}
}

// F16 is a DTYPE_F16 tensor over IEEE binary16 bit patterns.
func F16(bits []uint16, shape ...int64) Tensor {
	return Tensor{DType: pb.DType_DTYPE_F16, Shape: shapeOr(shape, len(bits)), Data: asBytes(bits)}
}

func (t Tensor) check(what string, ranks ...int) error {
	itemsize := map[pb.DType]int64{pb.DType_DTYPE_F32: 4, pb.DType_DTYPE_F16: 2, pb.DType_DTYPE_BF16: 2}[t.DType]
	if itemsize == 0 {
		return fmt.Errorf("%w: %s: dtype must be F32, F16 or BF16, got %v", ErrInvalidArgument, what, t.DType)
	}
	rankOK := false
	for _, r := range ranks {
		rankOK = rankOK || len(t.Shape) == r
	}
	if !rankOK {
		return fmt.Errorf("%w: %s: rank must be one of %v, got shape %v", ErrInvalidArgument, what, ranks, t.Shape)
	}
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	if n*itemsize != int64(len(t.Data)) {
		return fmt.Errorf("%w: %s: shape %v needs %d bytes of %v, got %d", ErrInvalidArgument, what, t.Shape, n*itemsize, t.DType, len(t.Data))
	}
	return nil
}

func (t Tensor) proto() *pb.Tensor {
	return &pb.Tensor{Dtype: t.DType, Shape: t.Shape, Data: t.Data}
}

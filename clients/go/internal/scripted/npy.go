package scripted

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
)

var (
	descrRE = regexp.MustCompile(`'descr':\s*'<f4'`)
	orderRE = regexp.MustCompile(`'fortran_order':\s*False`)
	shapeRE = regexp.MustCompile(`'shape':\s*\(([^)]*)\)`)
)

// ReadNpy reads a .npy (version 1 or 2) file of little-endian float32 in C order.
func ReadNpy(path string) ([]float32, []int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	if len(b) < 10 || b[0] != 0x93 || string(b[1:6]) != "NUMPY" {
		return nil, nil, fmt.Errorf("%s: not a .npy file", path)
	}
	start, hlen := 10, int(binary.LittleEndian.Uint16(b[8:10]))
	if b[6] >= 2 {
		start, hlen = 12, int(binary.LittleEndian.Uint32(b[8:12]))
	}
	header := string(b[start : start+hlen])
	m := shapeRE.FindStringSubmatch(header)
	if !descrRE.MatchString(header) || !orderRE.MatchString(header) || m == nil {
		return nil, nil, fmt.Errorf("%s: expected little-endian float32 in C order, header %s", path, header)
	}
	var shape []int64
	n := 1
	for _, f := range strings.Split(m[1], ",") {
		if f = strings.TrimSpace(f); f != "" {
			d, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: bad shape %q", path, m[1])
			}
			shape = append(shape, d)
			n *= int(d)
		}
	}
	data := b[start+hlen:]
	if len(data) < 4*n {
		return nil, nil, fmt.Errorf("%s: %d bytes of data for %d elements", path, len(data), n)
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
	}
	return out, shape, nil
}

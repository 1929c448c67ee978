package client

import (
	"bytes"
	"encoding/base64"
	"math"
	"testing"
)

// FuzzDecodeB64: DecodeB64 never panics; what it accepts is a whole number of float32s
// of the asked dimension that encodes back to the same bytes.
func FuzzDecodeB64(f *testing.F) {
	for _, seed := range []string{"", "AAAAAA==", "AACAPwAAAEA=", "AACAfw==", "AADAfw==", "@@@@", "AAAAAAAA", "AAAA\nAAAA", "AA==AA=="} {
		f.Add(seed, 0)
		f.Add(seed, 2)
	}
	f.Fuzz(func(t *testing.T, s string, dim int) {
		dim %= 4096
		vec, err := DecodeB64(s, dim)
		if err != nil {
			return
		}
		if dim > 0 && len(vec) != dim {
			t.Fatalf("dimension %d accepted for %d", len(vec), dim)
		}
		raw, _ := base64.StdEncoding.DecodeString(s)
		back, _ := base64.StdEncoding.DecodeString(EncodeB64(vec))
		if !bytes.Equal(raw, back) {
			t.Fatalf("%q decodes to %v, which encodes to other bytes", s, vec)
		}
	})
}

// FuzzSchemaVector: Vector never panics and never accepts a vector the index cannot
// hold: wrong dimension, a non-finite component, a squared length whose distances
// overflow, a zero vector under Cosine.
func FuzzSchemaVector(f *testing.F) {
	f.Add([]byte{0, 0, 128, 63, 0, 0, 0, 64}, "", 2, "Cosine")
	f.Add([]byte{}, "AACAPw==", 1, "L2")
	f.Add([]byte{0, 0, 192, 127}, "", 1, "InnerProduct")
	f.Fuzz(func(t *testing.T, raw []byte, b64 string, dim int, metric string) {
		var vec []float32
		if len(raw) >= 4 {
			vec, _ = DecodeB64(base64.StdEncoding.EncodeToString(raw[:len(raw)/4*4]), 0)
		}
		sc := Schema{Dimension: dim % 64, Metric: metric}
		got, err := sc.Vector("v", vec, b64)
		if err != nil {
			if _, ok := err.(*APIError); !ok {
				t.Fatalf("error %T", err)
			}
			return
		}
		if sc.Dimension > 0 && len(got) != sc.Dimension || len(got) == 0 {
			t.Fatalf("accepted dimension %d for %d", len(got), sc.Dimension)
		}
		var norm float64
		for _, x := range got {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				t.Fatalf("accepted %v", got)
			}
			norm += float64(x) * float64(x)
		}
		if norm > MaxSquaredNorm || (norm == 0 && metric == "Cosine") {
			t.Fatalf("accepted squared length %g under %s", norm, metric)
		}
	})
}

package vecfile

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/parquet-go/parquet-go"
)

// fuzzFormats are the formats FuzzOpen reads its input as, by the first byte of the input.
var fuzzFormats = []string{"fvecs", "bvecs", "npy", "jsonl", "parquet"}

// FuzzOpen: a vector file is outside input (kubectl annshard import reads any file it
// is given). Whatever the bytes, in whichever format, Open and Next return errors, never
// panic; every row they accept has the reader's dimension and finite components, and a
// reader that knows its row count gives exactly that many rows (good or row errors)
// before io.EOF.
func FuzzOpen(f *testing.F) {
	vs := testVectors(3, 4)
	f.Add(uint8(0), fvecs(vs))
	bv := []byte{4, 0, 0, 0, 1, 2, 3, 4, 4, 0, 0, 0, 5, 6, 7, 8}
	f.Add(uint8(1), bv)
	f.Add(uint8(2), npyFile("<f4", false, "(2, 2)", make([]byte, 16)))
	f.Add(uint8(2), npyFile(">f8", true, "(3, 1)", make([]byte, 24)))
	f.Add(uint8(3), []byte(`{"id":"a","vector":[1,2,3],"partition":"p"}`+"\n"+`[1,2,3]`+"\n"+`{"id":"b","vector":[1,2]}`))
	var pq bytes.Buffer
	w := parquet.NewGenericWriter[pqRow](&pq)
	if _, err := w.Write([]pqRow{{ID: "a", Embedding: vs[0], Partition: "p"}, {ID: "b", Embedding: vs[1]}}); err != nil {
		f.Fatal(err)
	}
	if err := w.Close(); err != nil {
		f.Fatal(err)
	}
	f.Add(uint8(4), pq.Bytes())
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		format := fuzzFormats[int(which)%len(fuzzFormats)]
		path := filepath.Join(t.TempDir(), "in."+format)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := Open(path, Options{})
		if err != nil {
			return
		}
		defer r.Close()
		const maxRows = 1 << 12
		rows := int64(0)
		for ; rows < maxRows; rows++ {
			var rec Record
			err := r.Next(&rec)
			if err == io.EOF {
				if r.Rows() >= 0 && rows != r.Rows() {
					t.Fatalf("%s: %d rows before EOF, the header says %d", format, rows, r.Rows())
				}
				return
			}
			var re *RowError
			if errors.As(err, &re) {
				continue
			}
			if err != nil {
				return
			}
			if d := r.Dim(); d > 0 && len(rec.Vector) != d {
				t.Fatalf("%s: row %d has dimension %d, the reader %d", format, rows, len(rec.Vector), d)
			}
			if len(rec.Vector) == 0 {
				t.Fatalf("%s: row %d accepted with an empty vector", format, rows)
			}
			for _, x := range rec.Vector {
				if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
					t.Fatalf("%s: row %d accepted with component %v", format, rows, x)
				}
			}
		}
	})
}

package vecfile

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
)

// maxDim bounds the dimension a file header may declare, so that a corrupt header is
// reported as such instead of turning into a huge allocation. It equals the API's limit.
const maxDim = 65536

// texmex reads .fvecs (float32 components) and .bvecs (uint8 components): each record is
// a little-endian int32 dimension followed by that many components.
type texmex struct {
	f        *os.File
	br       *bufio.Reader
	elemSize int
	dim      int
	rows     int64
	row      int64
	raw      []byte
	vec      []float32
}

func newTexmex(f *os.File, size int64, elemSize int) (*texmex, error) {
	name := map[int]string{4: "fvecs", 1: "bvecs"}[elemSize]
	if size == 0 {
		return nil, fmt.Errorf("empty file")
	}
	if size < 4 {
		return nil, fmt.Errorf("truncated: %d bytes, not even one record header", size)
	}
	var hdr [4]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return nil, fmt.Errorf("reading the first record header: %w", err)
	}
	dim := int(int32(binary.LittleEndian.Uint32(hdr[:])))
	if dim <= 0 || dim > maxDim {
		return nil, fmt.Errorf("first record declares dimension %d: not a .%s file (the dimension must be 1..%d)", dim, name, maxDim)
	}
	rec := int64(4 + dim*elemSize)
	if size%rec != 0 {
		return nil, fmt.Errorf("truncated or not .%s: %d bytes is %d whole records of dimension %d (%d bytes each) and %d bytes over",
			name, size, size/rec, dim, rec, size%rec)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return &texmex{
		f: f, br: bufio.NewReaderSize(f, 1<<20), elemSize: elemSize, dim: dim, rows: size / rec,
		raw: make([]byte, 4+dim*elemSize), vec: make([]float32, dim),
	}, nil
}

func (t *texmex) Format() string {
	if t.elemSize == 1 {
		return "bvecs"
	}
	return "fvecs"
}
func (t *texmex) Dim() int            { return t.dim }
func (t *texmex) Rows() int64         { return t.rows }
func (t *texmex) HasIDs() bool        { return false }
func (t *texmex) HasPartitions() bool { return false }
func (t *texmex) Close() error        { return t.f.Close() }

func (t *texmex) Next(rec *Record) error {
	if t.row >= t.rows {
		return io.EOF
	}
	if err := readRecord(t.br, t.raw, t.row); err != nil {
		return err
	}
	if d := int(int32(binary.LittleEndian.Uint32(t.raw))); d != t.dim {
		return fmt.Errorf("row %d declares dimension %d, the file started with %d: corrupt, or records of mixed dimension", t.row, d, t.dim)
	}
	body := t.raw[4:]
	if t.elemSize == 4 {
		for i := range t.vec {
			t.vec[i] = math.Float32frombits(binary.LittleEndian.Uint32(body[4*i:]))
		}
	} else {
		for i, b := range body {
			t.vec[i] = float32(b)
		}
	}
	*rec = Record{Row: t.row, Vector: t.vec}
	t.row++
	if t.elemSize == 4 {
		return checkFinite(rec.Row, t.vec)
	}
	return nil
}

package vecfile

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/x448/float16"
)

// npyMagic starts every .npy file (NumPy's format description, versions 1.0 to 3.0).
const npyMagic = "\x93NUMPY"

// fortranBlockBytes is about how much a Fortran-order file is read at once: one block of
// rows, gathered column by column.
const fortranBlockBytes = 8 << 20

// npy reads a 2-D NumPy array, one row per vector. Real dtypes of either byte order are
// converted to float32 (Format says so); Fortran (column-major) order is read a block
// of rows at a time.
type npy struct {
	f       *os.File
	br      *bufio.Reader
	dtype   string
	order   binary.ByteOrder
	es      int // element size
	conv    func(b []byte) float32
	rows    int64
	dim     int
	dataOff int64
	fortran bool
	row     int64
	raw     []byte
	vec     []float32

	// Fortran order: a block of rows read column by column, and where it starts.
	block      []float32
	colBuf     []byte
	blockStart int64
	blockRows  int64
}

var (
	npyDescr   = regexp.MustCompile(`'descr'\s*:\s*('[^']*'|\[)`)
	npyFortran = regexp.MustCompile(`'fortran_order'\s*:\s*(True|False)`)
	npyShape   = regexp.MustCompile(`'shape'\s*:\s*\(([^)]*)\)`)
)

func newNpy(f *os.File, size int64) (*npy, error) {
	var pre [10]byte
	if _, err := io.ReadFull(f, pre[:]); err != nil {
		return nil, fmt.Errorf("not a .npy file: %d bytes, shorter than the header", size)
	}
	if string(pre[:6]) != npyMagic {
		return nil, fmt.Errorf("not a .npy file (no \\x93NUMPY magic; a .npz archive must be unpacked first)")
	}
	var hlen, off int64
	switch pre[6] {
	case 1:
		hlen, off = int64(binary.LittleEndian.Uint16(pre[8:10])), 10
	case 2, 3:
		var b [2]byte
		if _, err := io.ReadFull(f, b[:]); err != nil {
			return nil, fmt.Errorf("truncated .npy header")
		}
		hlen, off = int64(binary.LittleEndian.Uint32(append(pre[8:10:10], b[:]...))), 12
	default:
		return nil, fmt.Errorf(".npy format version %d.%d is not supported (1.0 to 3.0 are)", pre[6], pre[7])
	}
	if hlen > 1<<20 || off+hlen > size {
		return nil, fmt.Errorf("truncated .npy header (declares %d bytes, the file has %d)", hlen, size)
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return nil, fmt.Errorf("reading the .npy header: %w", err)
	}
	n := &npy{f: f, dataOff: off + hlen}
	if err := n.parseHeader(string(hdr)); err != nil {
		return nil, err
	}
	want := n.rows * int64(n.dim) * int64(n.es)
	if have := size - n.dataOff; have != want {
		if have < want {
			return nil, fmt.Errorf("truncated: shape (%d, %d) of %s needs %d data bytes, the file has %d (%d whole rows)",
				n.rows, n.dim, n.dtype, want, have, have/max(1, int64(n.dim*n.es)))
		}
		return nil, fmt.Errorf("corrupt: shape (%d, %d) of %s needs %d data bytes, the file has %d more", n.rows, n.dim, n.dtype, want, have-want)
	}
	n.raw = make([]byte, n.dim*n.es)
	n.vec = make([]float32, n.dim)
	if !n.fortran {
		n.br = bufio.NewReaderSize(f, 1<<20)
	}
	return n, nil
}

func (n *npy) parseHeader(h string) error {
	m := npyDescr.FindStringSubmatch(h)
	if m == nil {
		return fmt.Errorf("corrupt .npy header %q: no descr", h)
	}
	if m[1] == "[" {
		return fmt.Errorf("structured dtype (a record array) is not supported: save a plain 2-D float array (e.g. np.save(f, arr.astype('float32')))")
	}
	if err := n.setDtype(strings.Trim(m[1], "'")); err != nil {
		return err
	}
	if fm := npyFortran.FindStringSubmatch(h); fm != nil {
		n.fortran = fm[1] == "True"
	}
	sm := npyShape.FindStringSubmatch(h)
	if sm == nil {
		return fmt.Errorf("corrupt .npy header %q: no shape", h)
	}
	var dims []int64
	for _, s := range strings.Split(sm[1], ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSuffix(s, "L"), 10, 64)
		if err != nil || v < 0 {
			return fmt.Errorf("corrupt .npy header: shape %q", sm[1])
		}
		dims = append(dims, v)
	}
	switch {
	case len(dims) == 1:
		return fmt.Errorf("a 1-D array of %d values: save the vectors as a 2-D array of shape (rows, dimension), e.g. arr.reshape(1, -1) for one vector", dims[0])
	case len(dims) != 2:
		return fmt.Errorf("a %d-D array of shape (%s): want 2-D (rows, dimension); reshape it first, e.g. arr.reshape(-1, arr.shape[-1])", len(dims), sm[1])
	case dims[1] == 0 || dims[1] > maxDim:
		return fmt.Errorf("shape (%d, %d): the dimension must be 1..%d", dims[0], dims[1], maxDim)
	}
	n.rows, n.dim = dims[0], int(dims[1])
	return nil
}

// setDtype accepts every real dtype; the others get a message that says what to do.
func (n *npy) setDtype(d string) error {
	if len(d) < 2 {
		return fmt.Errorf("unsupported dtype %q", d)
	}
	n.dtype = d
	switch d[0] {
	case '<', '|', '=':
		n.order = binary.LittleEndian
	case '>':
		n.order = binary.BigEndian
	default:
		return fmt.Errorf("unsupported dtype %q", d)
	}
	size, err := strconv.Atoi(d[2:])
	if err != nil && d[1] != 'O' {
		return fmt.Errorf("unsupported dtype %q", d)
	}
	n.es = size
	o := n.order
	switch kind := d[1]; {
	case kind == 'f' && size == 4:
		n.conv = func(b []byte) float32 { return math.Float32frombits(o.Uint32(b)) }
	case kind == 'f' && size == 8:
		n.conv = func(b []byte) float32 { return float32(math.Float64frombits(o.Uint64(b))) }
	case kind == 'f' && size == 2:
		n.conv = func(b []byte) float32 { return float16.Frombits(o.Uint16(b)).Float32() }
	case kind == 'i' && size == 1:
		n.conv = func(b []byte) float32 { return float32(int8(b[0])) }
	case kind == 'u' && size == 1:
		n.conv = func(b []byte) float32 { return float32(b[0]) }
	case kind == 'i' && size == 2:
		n.conv = func(b []byte) float32 { return float32(int16(o.Uint16(b))) }
	case kind == 'u' && size == 2:
		n.conv = func(b []byte) float32 { return float32(o.Uint16(b)) }
	case kind == 'i' && size == 4:
		n.conv = func(b []byte) float32 { return float32(int32(o.Uint32(b))) }
	case kind == 'u' && size == 4:
		n.conv = func(b []byte) float32 { return float32(o.Uint32(b)) }
	case kind == 'i' && size == 8:
		n.conv = func(b []byte) float32 { return float32(int64(o.Uint64(b))) }
	case kind == 'u' && size == 8:
		n.conv = func(b []byte) float32 { return float32(o.Uint64(b)) }
	case kind == 'c':
		return fmt.Errorf("dtype %q is complex: vectors must be real; keep the real part (arr.real) or split real and imaginary parts into columns", d)
	case kind == 'b':
		return fmt.Errorf("dtype %q is boolean: convert it to numbers first (arr.astype('float32'))", d)
	case kind == 'O':
		return fmt.Errorf("dtype %q holds Python objects (a ragged or mixed array, saved with pickle): stack the vectors into a 2-D float array first (np.stack(arr).astype('float32'))", d)
	case kind == 'U' || kind == 'S' || kind == 'a':
		return fmt.Errorf("dtype %q holds strings, not numbers", d)
	default:
		return fmt.Errorf("unsupported dtype %q: want a real number type, best float32 ('<f4')", d)
	}
	return nil
}

func (n *npy) Format() string {
	s := "npy " + map[bool]string{true: "big-endian ", false: ""}[n.order == binary.BigEndian] + n.dtypeName()
	if n.dtype[1:] != "f4" {
		s += " (converted to float32)"
	}
	if n.fortran {
		s += ", Fortran order"
	}
	return s
}

func (n *npy) dtypeName() string {
	kind := map[byte]string{'f': "float", 'i': "int", 'u': "uint"}[n.dtype[1]]
	return kind + strconv.Itoa(8*n.es)
}

func (n *npy) Dim() int            { return n.dim }
func (n *npy) Rows() int64         { return n.rows }
func (n *npy) HasIDs() bool        { return false }
func (n *npy) HasPartitions() bool { return false }
func (n *npy) Close() error        { return n.f.Close() }

func (n *npy) Next(rec *Record) error {
	if n.row >= n.rows {
		return io.EOF
	}
	if n.fortran {
		if err := n.fortranRow(); err != nil {
			return err
		}
	} else {
		if err := readRecord(n.br, n.raw, n.row); err != nil {
			return err
		}
		for i := range n.vec {
			n.vec[i] = n.conv(n.raw[i*n.es:])
		}
	}
	*rec = Record{Row: n.row, Vector: n.vec}
	n.row++
	return checkFinite(rec.Row, n.vec)
}

// fortranRow fills n.vec with row n.row of a column-major array. Rows are gathered a
// block at a time: one read per column of the block's rows, so the file is read in
// large sequential pieces instead of one element at a time.
func (n *npy) fortranRow() error {
	if n.row >= n.blockStart+n.blockRows || n.block == nil {
		per := max(1, int64(fortranBlockBytes/(n.dim*n.es)))
		n.blockStart, n.blockRows = n.row, min(per, n.rows-n.row)
		if n.block == nil {
			n.block = make([]float32, per*int64(n.dim))
		}
		if n.colBuf == nil {
			n.colBuf = make([]byte, per*int64(n.es))
		}
		buf := n.colBuf[:n.blockRows*int64(n.es)]
		for j := range n.dim {
			off := n.dataOff + (int64(j)*n.rows+n.blockStart)*int64(n.es)
			if _, err := n.f.ReadAt(buf, off); err != nil {
				return fmt.Errorf("rows %d..%d: reading column %d: %w", n.blockStart, n.blockStart+n.blockRows-1, j, err)
			}
			for i := range n.blockRows {
				n.block[i*int64(n.dim)+int64(j)] = n.conv(buf[i*int64(n.es):])
			}
		}
	}
	i := n.row - n.blockStart
	copy(n.vec, n.block[i*int64(n.dim):(i+1)*int64(n.dim)])
	return nil
}

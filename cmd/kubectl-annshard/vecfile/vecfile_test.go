package vecfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
)

// testVectors are n vectors of dim components with exact float32 values.
func testVectors(n, dim int) [][]float32 {
	out := make([][]float32, n)
	for i := range out {
		out[i] = make([]float32, dim)
		for j := range out[i] {
			out[i][j] = float32(i*dim+j) / 4
		}
	}
	return out
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func fvecs(vs [][]float32) []byte {
	var b bytes.Buffer
	for _, v := range vs {
		_ = binary.Write(&b, binary.LittleEndian, int32(len(v)))
		_ = binary.Write(&b, binary.LittleEndian, v)
	}
	return b.Bytes()
}

// npyFile builds a .npy v1.0 file of the given dtype, shape and raw data.
func npyFile(descr string, fortran bool, shape string, data []byte) []byte {
	f := map[bool]string{true: "True", false: "False"}[fortran]
	h := fmt.Sprintf("{'descr': '%s', 'fortran_order': %s, 'shape': %s, }", descr, f, shape)
	for (10+len(h)+1)%64 != 0 {
		h += " "
	}
	h += "\n"
	var b bytes.Buffer
	b.WriteString(npyMagic)
	b.Write([]byte{1, 0})
	_ = binary.Write(&b, binary.LittleEndian, uint16(len(h)))
	b.WriteString(h)
	b.Write(data)
	return b.Bytes()
}

// readAll reads every row; row errors are collected, a file error ends the read.
func readAll(t *testing.T, r Reader) (vecs [][]float32, recs []Record, rowErrs []string, err error) {
	t.Helper()
	for {
		var rec Record
		e := r.Next(&rec)
		if e == io.EOF {
			return vecs, recs, rowErrs, nil
		}
		var re *RowError
		if errors.As(e, &re) {
			rowErrs = append(rowErrs, re.Error())
			continue
		}
		if e != nil {
			return vecs, recs, rowErrs, e
		}
		vecs = append(vecs, append([]float32(nil), rec.Vector...))
		recs = append(recs, rec)
	}
}

func open(t *testing.T, path string, opt Options) Reader {
	t.Helper()
	r, err := Open(path, opt)
	if err != nil {
		t.Fatalf("Open(%s): %v", filepath.Base(path), err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func equalVecs(t *testing.T, got, want [][]float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("read %d vectors, want %d", len(got), len(want))
	}
	for i := range want {
		for j := range want[i] {
			if got[i][j] != want[i][j] {
				t.Fatalf("vector %d component %d = %v, want %v", i, j, got[i][j], want[i][j])
			}
		}
	}
}

func TestFvecs(t *testing.T) {
	want := testVectors(1000, 7)
	r := open(t, writeFile(t, "a.fvecs", fvecs(want)), Options{})
	if r.Dim() != 7 || r.Rows() != 1000 || r.HasIDs() || r.Format() != "fvecs" {
		t.Fatalf("dim %d rows %d ids %v format %q", r.Dim(), r.Rows(), r.HasIDs(), r.Format())
	}
	got, recs, rowErrs, err := readAll(t, r)
	if err != nil || len(rowErrs) > 0 {
		t.Fatal(err, rowErrs)
	}
	equalVecs(t, got, want)
	if recs[999].Row != 999 {
		t.Fatalf("last row number %d", recs[999].Row)
	}
}

func TestFvecsBadFiles(t *testing.T) {
	good := fvecs(testVectors(10, 4))
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "empty file"},
		{"header only", good[:3], "truncated"},
		{"cut in the last record", good[:len(good)-5], "truncated or not .fvecs: 195 bytes is 9 whole records"},
		{"cut after a header", good[:len(good)-16], "truncated"},
		{"zero dimension", make([]byte, 8), "declares dimension 0"},
		{"huge dimension", []byte{0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0}, "declares dimension 2147483647"},
		{"text file", []byte("hello world, this is not a vector file\n"), "not a .fvecs file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(writeFile(t, "x.fvecs", tc.data), Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open: %v, want an error with %q", err, tc.want)
			}
		})
	}
	// Mixed dimensions whose total size happens to fit whole records of the first:
	// found when the odd record is read, as a file error.
	var b bytes.Buffer
	b.Write(fvecs(testVectors(1, 4)))      // 20 bytes
	b.Write(fvecs([][]float32{{1, 2, 3}})) // 16 bytes
	b.Write(make([]byte, 4))               // 40 bytes = 2 records of dimension 4
	r := open(t, writeFile(t, "m.fvecs", b.Bytes()), Options{})
	_, _, _, err := readAll(t, r)
	if err == nil || !strings.Contains(err.Error(), "row 1 declares dimension 3") {
		t.Fatalf("mixed dimensions: %v", err)
	}
}

func TestFvecsNaNIsARowError(t *testing.T) {
	vs := testVectors(5, 3)
	vs[2][1] = float32(math.NaN())
	vs[4][0] = float32(math.Inf(-1))
	r := open(t, writeFile(t, "n.fvecs", fvecs(vs)), Options{})
	got, _, rowErrs, err := readAll(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || len(rowErrs) != 2 || rowErrs[0] != "row 2: component 1 is NaN" || rowErrs[1] != "row 4: component 0 is -Inf" {
		t.Fatalf("good %d, row errors %q", len(got), rowErrs)
	}
}

func TestBvecs(t *testing.T) {
	var b bytes.Buffer
	for i := range 3 {
		_ = binary.Write(&b, binary.LittleEndian, int32(4))
		b.Write([]byte{byte(i), 255, 0, 7})
	}
	r := open(t, writeFile(t, "a.bvecs", b.Bytes()), Options{})
	got, _, _, err := readAll(t, r)
	if err != nil {
		t.Fatal(err)
	}
	equalVecs(t, got, [][]float32{{0, 255, 0, 7}, {1, 255, 0, 7}, {2, 255, 0, 7}})
	if _, err := Open(writeFile(t, "b.bvecs", b.Bytes()[:b.Len()-1]), Options{}); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("truncated bvecs: %v", err)
	}
}

func TestNpyDtypesAndOrders(t *testing.T) {
	want := testVectors(37, 5) // values k/4: exact in every float type and, scaled, ints
	le, be := binary.LittleEndian, binary.BigEndian
	encode := func(order binary.AppendByteOrder, fortran bool, put func(b []byte, x float32) []byte) []byte {
		var out []byte
		if fortran {
			for j := range 5 {
				for i := range want {
					out = put(out, want[i][j])
				}
			}
			return out
		}
		for _, v := range want {
			for _, x := range v {
				out = put(out, x)
			}
		}
		return out
	}
	f4 := func(o binary.AppendByteOrder) func([]byte, float32) []byte {
		return func(b []byte, x float32) []byte { return o.AppendUint32(b, math.Float32bits(x)) }
	}
	f8 := func(o binary.AppendByteOrder) func([]byte, float32) []byte {
		return func(b []byte, x float32) []byte { return o.AppendUint64(b, math.Float64bits(float64(x))) }
	}
	for _, tc := range []struct {
		descr, format string
		fortran       bool
		data          []byte
	}{
		{"<f4", "npy float32", false, encode(le, false, f4(le))},
		{">f4", "npy big-endian float32", false, encode(be, false, f4(be))},
		{"<f8", "npy float64 (converted to float32)", false, encode(le, false, f8(le))},
		{">f8", "npy big-endian float64 (converted to float32)", false, encode(be, false, f8(be))},
		{"<f4", "npy float32, Fortran order", true, encode(le, true, f4(le))},
		{">f8", "npy big-endian float64 (converted to float32), Fortran order", true, encode(be, true, f8(be))},
	} {
		t.Run(tc.format, func(t *testing.T) {
			r := open(t, writeFile(t, "a.npy", npyFile(tc.descr, tc.fortran, "(37, 5)", tc.data)), Options{})
			if r.Format() != tc.format || r.Dim() != 5 || r.Rows() != 37 {
				t.Fatalf("format %q dim %d rows %d", r.Format(), r.Dim(), r.Rows())
			}
			got, _, rowErrs, err := readAll(t, r)
			if err != nil || rowErrs != nil {
				t.Fatal(err, rowErrs)
			}
			equalVecs(t, got, want)
		})
	}
	t.Run("integers and float16", func(t *testing.T) {
		for _, tc := range []struct {
			descr string
			data  []byte
			want  float32
		}{
			{"|u1", []byte{200}, 200},
			{"|i1", []byte{0xff}, -1},
			{"<i2", le.AppendUint16(nil, 0xfffe), -2},
			{">u2", be.AppendUint16(nil, 300), 300},
			{"<i4", le.AppendUint32(nil, 0xfffffffd), -3},
			{"<u8", le.AppendUint64(nil, 1<<40), 1 << 40},
			{"<f2", le.AppendUint16(nil, 0x3c00), 1},
		} {
			r := open(t, writeFile(t, "i.npy", npyFile(tc.descr, false, "(1, 1)", tc.data)), Options{})
			got, _, _, err := readAll(t, r)
			if err != nil || len(got) != 1 || got[0][0] != tc.want {
				t.Fatalf("%s: %v %v, want %v", tc.descr, got, err, tc.want)
			}
		}
	})
}

func TestNpyFortranAcrossBlocks(t *testing.T) {
	// More rows than one Fortran block holds, so rows are gathered over several blocks.
	dim := 1024
	rows := fortranBlockBytes/(dim*4) + 300
	var data []byte
	for j := range dim {
		for i := range rows {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(float32(i*dim+j)))
		}
	}
	r := open(t, writeFile(t, "f.npy", npyFile("<f4", true, fmt.Sprintf("(%d, %d)", rows, dim), data)), Options{})
	var rec Record
	for i := range rows {
		if err := r.Next(&rec); err != nil {
			t.Fatal(err)
		}
		if rec.Vector[0] != float32(i*dim) || rec.Vector[dim-1] != float32(i*dim+dim-1) {
			t.Fatalf("row %d: %v..%v", i, rec.Vector[0], rec.Vector[dim-1])
		}
	}
	if err := r.Next(&rec); err != io.EOF {
		t.Fatalf("after the last row: %v", err)
	}
}

func TestNpyBadFiles(t *testing.T) {
	data := make([]byte, 4*2*3)
	for _, tc := range []struct {
		name string
		file []byte
		want string
	}{
		{"truncated data", npyFile("<f4", false, "(2, 3)", data[:20]), "truncated: shape (2, 3) of <f4 needs 24 data bytes, the file has 20 (1 whole rows)"},
		{"extra data", npyFile("<f4", false, "(2, 3)", append(data, 0)), "corrupt"},
		{"truncated header", npyFile("<f4", false, "(2, 3)", nil)[:30], "truncated .npy header"},
		{"not npy", []byte("PK\x03\x04 this is a zip archive"), "not a .npy file"},
		{"1-D", npyFile("<f4", false, "(6,)", data), "1-D array of 6 values"},
		{"3-D", npyFile("<f4", false, "(1, 2, 3)", data), "3-D array"},
		{"complex", npyFile("<c8", false, "(2, 3)", data), "complex"},
		{"object", npyFile("|O", false, "(2, 3)", data), "Python objects"},
		{"strings", npyFile("<U10", false, "(2, 3)", data), "strings"},
		{"bool", npyFile("|b1", false, "(2, 3)", data), "boolean"},
		{"structured", []byte(strings.Replace(string(npyFile("<f4", false, "(2, 3)", data)), "'<f4'", "[('a', '<f4')]", 1)), "structured dtype"},
		{"zero dimension", npyFile("<f4", false, "(2, 0)", nil), "dimension must be 1.."},
		{"version 9", append([]byte(npyMagic+"\x09\x00"), make([]byte, 20)...), "version 9.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(writeFile(t, "x.npy", tc.file), Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestNpyNaNIsARowError(t *testing.T) {
	var data []byte
	for _, x := range []float32{1, 2, float32(math.NaN()), 4} {
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(x))
	}
	r := open(t, writeFile(t, "n.npy", npyFile("<f4", false, "(2, 2)", data)), Options{})
	got, _, rowErrs, err := readAll(t, r)
	if err != nil || len(got) != 1 || len(rowErrs) != 1 || rowErrs[0] != "row 1: component 0 is NaN" {
		t.Fatalf("got %v, row errors %q, err %v", got, rowErrs, err)
	}
}

func TestJSONL(t *testing.T) {
	in := `{"id": "a", "vector": [1, 2.5, -3e-2], "partition": "p1", "text": "ignored"}

{"id": 17, "vector": [4,5,6]}
{"id": "c", "vector": [1, 2]}
{"id": "d", "vector": [1, NaN, 3]}
{"id": "e", "vector": [1, "x", 3]}
{"id": "f", "vector": null}
{"id": "g" "vector": [1,2,3]}
{"vector": [7, 8, 9]}
{"id": "h", "vector": [1e39, 0, 0]}
{"id": "i", "vector": [1, 2, 3,]}
{"id": "j", "vector": [7, 8, 9]}`
	r := open(t, writeFile(t, "a.jsonl", []byte(in)), Options{})
	if !r.HasIDs() || !r.HasPartitions() || r.Rows() != -1 {
		t.Fatalf("ids %v partitions %v rows %d", r.HasIDs(), r.HasPartitions(), r.Rows())
	}
	got, recs, rowErrs, err := readAll(t, r)
	if err != nil {
		t.Fatal(err)
	}
	equalVecs(t, got, [][]float32{{1, 2.5, -3e-2}, {4, 5, 6}, {7, 8, 9}})
	if recs[0].ID != "a" || recs[0].Partition != "p1" || recs[1].ID != "17" || recs[1].Row != 2 || recs[2].ID != "j" || recs[2].Row != 11 {
		t.Fatalf("records %+v", recs)
	}
	wantErrs := []string{
		"row 3: dimension 2, the file's first vector has 3",
		"row 4: contains NaN, which is not JSON and not a valid vector component",
		"row 5: component 1 is not a number: \"x\"",
		"row 6: vector is null",
		"row 7: malformed JSON",
		"row 8: empty or missing id",
		"row 9: component 0: 1e39 does not fit a float32",
		"row 10: malformed JSON",
	}
	if len(rowErrs) != len(wantErrs) {
		t.Fatalf("row errors %q", rowErrs)
	}
	for i, w := range wantErrs {
		if !strings.HasPrefix(rowErrs[i], w) {
			t.Errorf("row error %d = %q, want %q...", i, rowErrs[i], w)
		}
	}
}

func TestJSONLBareArraysAndColumns(t *testing.T) {
	r := open(t, writeFile(t, "b.jsonl", []byte("[1,2]\n[3,4]\n")), Options{})
	got, recs, _, err := readAll(t, r)
	if err != nil || r.HasIDs() || recs[1].ID != "" {
		t.Fatal(err, recs)
	}
	equalVecs(t, got, [][]float32{{1, 2}, {3, 4}})

	// A long line (more than the reader's buffer) and named columns.
	long := make([]string, 70000)
	for i := range long {
		long[i] = "0.125"
	}
	body := `{"doc": "x1", "emb": [` + strings.Join(long, ",") + `], "tenant": "t"}` + "\n"
	r = open(t, writeFile(t, "c.jsonl", []byte(body)), Options{VectorColumn: "emb", IDColumn: "doc", PartitionColumn: "tenant"})
	got, recs, _, err = readAll(t, r)
	if err != nil || len(got) != 1 || len(got[0]) != 70000 || recs[0].ID != "x1" || recs[0].Partition != "t" {
		t.Fatalf("long line: %v, %d vectors", err, len(got))
	}

	for _, tc := range []struct{ name, body, want string }{
		{"empty", "", "no rows"},
		{"blank lines", "\n\n  \n", "no rows"},
		{"no vector column", `{"a": [1], "b": [2]}`, `no vector column: the first line has keys ["a" "b"]`},
		{"csv", "1,2,3\n", "not a JSON object or array"},
		{"named column missing", `{"vector": [1]}`, `no column "emb"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opt := Options{}
			if tc.name == "named column missing" {
				opt.VectorColumn = "emb"
			}
			_, err := Open(writeFile(t, "x.jsonl", []byte(tc.body)), opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open: %v, want %q", err, tc.want)
			}
		})
	}
}

type pqRow struct {
	ID        string    `parquet:"id"`
	Embedding []float32 `parquet:"embedding,list"`
	Partition string    `parquet:"partition"`
	Text      string    `parquet:"text"`
}

type pqDoubleRow struct {
	Key  int64     `parquet:"key"`
	Emb  []float64 `parquet:"emb,list"`
	Note string    `parquet:"note"`
}

func writeParquet[T any](t *testing.T, rows []T, opts ...parquet.WriterOption) string {
	t.Helper()
	var b bytes.Buffer
	w := parquet.NewGenericWriter[T](&b, opts...)
	if _, err := w.Write(rows); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "a.parquet", b.Bytes())
}

func TestParquet(t *testing.T) {
	want := testVectors(5000, 6)
	var rows []pqRow
	for i, v := range want {
		rows = append(rows, pqRow{ID: fmt.Sprint("doc-", i), Embedding: v, Partition: fmt.Sprint("p", i%3), Text: strings.Repeat("x", i%50)})
	}
	// Small row groups and pages, so reading crosses both.
	path := writeParquet(t, rows, parquet.MaxRowsPerRowGroup(1200), parquet.PageBufferSize(4096))
	r := open(t, path, Options{})
	if r.Rows() != 5000 || !r.HasIDs() || !r.HasPartitions() {
		t.Fatalf("rows %d ids %v partitions %v", r.Rows(), r.HasIDs(), r.HasPartitions())
	}
	got, recs, rowErrs, err := readAll(t, r)
	if err != nil || rowErrs != nil {
		t.Fatal(err, rowErrs)
	}
	equalVecs(t, got, want)
	for _, i := range []int{0, 1199, 1200, 4999} {
		if recs[i].ID != fmt.Sprint("doc-", i) || recs[i].Partition != fmt.Sprint("p", i%3) || recs[i].Row != int64(i) {
			t.Fatalf("record %d: %+v", i, recs[i])
		}
	}
	if r.Dim() != 6 {
		t.Fatalf("dim %d", r.Dim())
	}
}

func TestParquetDoublesIntIDsAndBadRows(t *testing.T) {
	rows := []pqDoubleRow{
		{Key: 10, Emb: []float64{1, 2, 3}},
		{Key: 11, Emb: []float64{1, 2}},
		{Key: 12, Emb: nil},
		{Key: 13, Emb: []float64{1, math.Inf(1), 3}},
		{Key: 14, Emb: []float64{4, 5, 6}},
	}
	r := open(t, writeParquet(t, rows), Options{IDColumn: "key"})
	got, recs, rowErrs, err := readAll(t, r)
	if err != nil {
		t.Fatal(err)
	}
	equalVecs(t, got, [][]float32{{1, 2, 3}, {4, 5, 6}})
	if recs[0].ID != "10" || recs[1].ID != "14" {
		t.Fatalf("ids %q %q", recs[0].ID, recs[1].ID)
	}
	wantErrs := []string{"row 1: dimension 2, the file's first vector has 3", "row 2: vector is null or empty", "row 3: component 1 is +Inf"}
	if fmt.Sprint(rowErrs) != fmt.Sprint(wantErrs) {
		t.Fatalf("row errors %q, want %q", rowErrs, wantErrs)
	}
	// "emb" is found by its usual name; without --id-column, "key" is not an id.
	r = open(t, writeParquet(t, rows), Options{})
	if r.HasIDs() {
		t.Fatal("key taken as the id column without --id-column")
	}
}

func TestParquetBadFiles(t *testing.T) {
	type noList struct {
		ID string  `parquet:"id"`
		X  float32 `parquet:"x"`
	}
	type twoLists struct {
		A []float32 `parquet:"a,list"`
		B []float32 `parquet:"b,list"`
	}
	type strList struct {
		Vector []string `parquet:"vector,list"`
	}
	good := writeParquet(t, []pqRow{{ID: "a", Embedding: []float32{1}}})
	raw, _ := os.ReadFile(good)
	for _, tc := range []struct {
		name string
		path string
		opt  Options
		want string
	}{
		{"no list column", writeParquet(t, []noList{{"a", 1}}), Options{}, "cannot tell the vector column"},
		{"scalar named", writeParquet(t, []noList{{"a", 1}}), Options{VectorColumn: "x"}, `column "x" holds one float per row`},
		{"two lists", writeParquet(t, []twoLists{{[]float32{1}, []float32{2}}}), Options{}, "2 are lists of numbers"},
		{"list of strings", writeParquet(t, []strList{{[]string{"a"}}}), Options{}, "list of byte_array"},
		{"missing column", good, Options{VectorColumn: "nope"}, `no column "nope"`},
		{"truncated", writeFile(t, "t.parquet", raw[:len(raw)-10]), Options{}, "not a readable Parquet file"},
		{"not parquet", writeFile(t, "n.parquet", []byte("just some text, not parquet at all")), Options{}, "not a readable Parquet file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(tc.path, tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open: %v, want %q", err, tc.want)
			}
		})
	}
}

func TestOpenByExtension(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"x.csv", `unknown file extension ".csv"`},
		{"x.fvecs.gz", "decompress it first"},
	} {
		_, err := Open(writeFile(t, tc.name, []byte("1,2,3")), Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// --format overrides the extension.
	r := open(t, writeFile(t, "vectors.bin", fvecs(testVectors(2, 2))), Options{Format: "fvecs"})
	if r.Rows() != 2 {
		t.Fatalf("rows %d", r.Rows())
	}
	if _, err := Open(t.TempDir(), Options{Format: "npy"}); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("directory: %v", err)
	}
}

package vecfile

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// Record is one row of a vector file.
type Record struct {
	// Row is the 0-based row number in the file.
	Row int64
	// ID and Partition are the row's id and partition columns; empty when the file has
	// none (the importer then generates ids).
	ID        string
	Partition string
	// Vector is only valid until the next call to Next: readers reuse its memory.
	Vector []float32
}

// Reader reads one vector file row by row.
type Reader interface {
	// Format names the file format ("fvecs", "npy float64 big-endian", ...).
	Format() string
	// Dim is the dimension of the file's vectors; 0 when it is only known once the
	// first good row has been read (JSON Lines).
	Dim() int
	// Rows is the number of rows, or -1 when it is not known without reading the file
	// (JSON Lines).
	Rows() int64
	// HasIDs and HasPartitions say whether rows carry ids and partitions of their own.
	HasIDs() bool
	HasPartitions() bool
	// Next reads the next row into rec. It returns io.EOF after the last row, a
	// *RowError for a bad row (the reader stays usable), or another error when the file
	// cannot be read further.
	Next(rec *Record) error
	// Close releases the file.
	Close() error
}

// RowError is a problem with one row; the rest of the file stays readable.
type RowError struct {
	Row    int64
	Reason string
}

func (e *RowError) Error() string { return fmt.Sprintf("row %d: %s", e.Row, e.Reason) }

// IsRowError reports whether err is a *RowError.
func IsRowError(err error) bool {
	var re *RowError
	return errors.As(err, &re)
}

// Options selects the columns of self-describing formats (JSON Lines, Parquet). Empty
// names pick a column by its usual name (see defaultVectorNames and friends).
type Options struct {
	VectorColumn    string
	IDColumn        string
	PartitionColumn string
	// Format overrides the choice by file extension: fvecs, bvecs, npy, jsonl, parquet.
	Format string
	// Dim, when set, is the dimension every row must have; JSON Lines and Parquet rows of
	// another dimension are row errors. (Without it they must match the file's first row.)
	// The fixed-size formats declare theirs in the header: compare Reader.Dim with it.
	Dim int
}

// dimReason is the row error for a vector of dimension got where want was expected;
// fromOpt says whether want came from Options.Dim or from the file's first row.
func dimReason(got, want int, fromOpt bool) string {
	if fromOpt {
		return fmt.Sprintf("dimension %d, want %d", got, want)
	}
	return fmt.Sprintf("dimension %d, the file's first vector has %d", got, want)
}

// Usual column names, tried in order when Options leaves a name empty.
var (
	defaultVectorNames    = []string{"vector", "embedding", "embeddings", "emb", "values", "vec"}
	defaultIDNames        = []string{"id", "_id", "ID", "Id"}
	defaultPartitionNames = []string{"partition"}
)

// Formats lists the format names Open accepts, for help texts.
const Formats = "fvecs, bvecs, npy, jsonl, parquet"

// FormatOf returns the format of path by its extension, or "" when it is not known.
func FormatOf(path string) string {
	switch strings.ToLower(filepath.Ext(strings.TrimSuffix(path, ".gz"))) {
	case ".fvecs":
		return "fvecs"
	case ".bvecs":
		return "bvecs"
	case ".npy":
		return "npy"
	case ".jsonl", ".ndjson", ".json":
		return "jsonl"
	case ".parquet", ".pq":
		return "parquet"
	}
	return ""
}

// Open opens path with the reader its format calls for and reads its header. Every error
// it returns is a file error and names the file.
func Open(path string, opt Options) (Reader, error) {
	format := opt.Format
	if format == "" {
		format = FormatOf(path)
	}
	if strings.HasSuffix(strings.ToLower(path), ".gz") {
		return nil, fmt.Errorf("%s: compressed files are not read directly: decompress it first (gunzip -k %s)", path, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("%s: is a directory", path)
	}
	var r Reader
	switch format {
	case "fvecs":
		r, err = newTexmex(f, st.Size(), 4)
	case "bvecs":
		r, err = newTexmex(f, st.Size(), 1)
	case "npy":
		r, err = newNpy(f, st.Size())
	case "jsonl":
		r, err = newJSONL(f, opt)
	case "parquet":
		r, err = newParquet(f, st.Size(), opt)
	case "":
		err = fmt.Errorf("unknown file extension %q: want one of .fvecs .bvecs .npy .jsonl .parquet, or name the format with --format", filepath.Ext(path))
	default:
		err = fmt.Errorf("unknown format %q: want one of %s", format, Formats)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// checkRow applies the row checks of the self-describing formats (JSON Lines, Parquet) to
// vector v of row: the dimension (*dim, learnt from the first row when 0; fixedDim says it
// came from Options.Dim) and finite components.
func checkRow(row int64, v []float32, dim *int, fixedDim bool) error {
	if *dim == 0 {
		*dim = len(v)
	}
	if len(v) != *dim {
		return &RowError{Row: row, Reason: dimReason(len(v), *dim, fixedDim)}
	}
	return checkFinite(row, v)
}

// checkFinite returns a RowError for the first NaN or infinite component of v.
func checkFinite(row int64, v []float32) error {
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return &RowError{Row: row, Reason: fmt.Sprintf("component %d is %v", i, x)}
		}
	}
	return nil
}

// pick returns want when set (and present), else the first of defaults present in has.
func pick(want string, defaults []string, has func(string) bool) (string, error) {
	if want != "" {
		if !has(want) {
			return "", fmt.Errorf("no column %q", want)
		}
		return want, nil
	}
	for _, d := range defaults {
		if has(d) {
			return d, nil
		}
	}
	return "", nil
}

// readRecord fills buf from r; a file that ends inside it was cut short while being read
// (Open checked the size first).
func readRecord(r io.Reader, buf []byte, row int64) error {
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("row %d: file ended early (was it truncated while being read?)", row)
		}
		return err
	}
	return nil
}

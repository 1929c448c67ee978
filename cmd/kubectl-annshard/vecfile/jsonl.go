package vecfile

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
)

// jsonl reads JSON Lines: one vector per line, either an object with a vector column and
// optional id and partition columns ({"id": "a", "vector": [0.1, 0.2]}) or a bare array
// ([0.1, 0.2]). Row numbers are 0-based line numbers, blank lines included, so that they
// stay the same from one read of the file to the next.
type jsonl struct {
	f        *os.File
	br       *bufio.Reader
	vecCol   string
	idCol    string
	partCol  string
	bare     bool
	fixedDim bool
	dim      int
	line     int64
	vec      []float32
	first    []byte // the first non-blank line, read by the constructor
	firstN   int64
}

func newJSONL(f *os.File, opt Options) (*jsonl, error) {
	j := &jsonl{f: f, br: bufio.NewReaderSize(f, 1<<20), dim: opt.Dim, fixedDim: opt.Dim > 0}
	// The columns are chosen from the first non-blank line.
	for {
		line, err := j.readLine()
		if err == io.EOF {
			return nil, fmt.Errorf("no rows: the file is empty")
		}
		if err != nil {
			return nil, err
		}
		j.line++
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		j.first, j.firstN = slices.Clone(line), j.line-1
		break
	}
	trimmed := bytes.TrimSpace(j.first)
	switch trimmed[0] {
	case '[':
		j.bare = true
		if opt.VectorColumn != "" || opt.IDColumn != "" || opt.PartitionColumn != "" {
			return nil, fmt.Errorf("lines are bare arrays, which have no columns to choose")
		}
		return j, nil
	case '{':
	default:
		return nil, fmt.Errorf("line %d is not a JSON object or array: want JSON Lines, one vector per line", j.firstN+1)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &obj); err != nil {
		return nil, fmt.Errorf("line %d: %v", j.firstN+1, jsonReason(trimmed, err))
	}
	has := func(k string) bool { _, ok := obj[k]; return ok }
	var err error
	if j.vecCol, err = pick(opt.VectorColumn, defaultVectorNames, has); err != nil {
		return nil, fmt.Errorf("vector column: %w (the first line has %s)", err, keysOf(obj))
	}
	if j.vecCol == "" {
		return nil, fmt.Errorf("no vector column: the first line has %s; name the vector column with --vector-column", keysOf(obj))
	}
	if j.idCol, err = pick(opt.IDColumn, defaultIDNames, has); err != nil {
		return nil, fmt.Errorf("id column: %w (the first line has %s)", err, keysOf(obj))
	}
	if j.partCol, err = pick(opt.PartitionColumn, defaultPartitionNames, has); err != nil {
		return nil, fmt.Errorf("partition column: %w (the first line has %s)", err, keysOf(obj))
	}
	return j, nil
}

func keysOf(obj map[string]json.RawMessage) string {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, strconv.Quote(k))
	}
	slices.Sort(keys)
	if len(keys) == 0 {
		return "no keys"
	}
	return "keys " + fmt.Sprint(keys)
}

// readLine returns the next line without its newline, however long it is.
func (j *jsonl) readLine() ([]byte, error) {
	line, err := j.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		long := slices.Clone(line)
		rest, err := j.br.ReadBytes('\n')
		long = append(long, rest...)
		if err != nil && !(err == io.EOF && len(long) > 0) {
			return nil, err
		}
		return bytes.TrimSuffix(long, []byte("\n")), nil
	}
	if err == io.EOF && len(line) > 0 {
		return line, nil
	}
	if err != nil {
		return nil, err
	}
	return line[:len(line)-1], nil
}

func (j *jsonl) Format() string {
	if j.bare {
		return "jsonl (bare arrays)"
	}
	return fmt.Sprintf("jsonl (vector column %q)", j.vecCol)
}
func (j *jsonl) Dim() int            { return j.dim }
func (j *jsonl) Rows() int64         { return -1 }
func (j *jsonl) HasIDs() bool        { return j.idCol != "" }
func (j *jsonl) HasPartitions() bool { return j.partCol != "" }
func (j *jsonl) Close() error        { return j.f.Close() }

func (j *jsonl) Next(rec *Record) error {
	var line []byte
	var row int64
	if j.first != nil {
		line, row, j.first = j.first, j.firstN, nil
	} else {
		for {
			l, err := j.readLine()
			if err != nil {
				return err
			}
			j.line++
			if len(bytes.TrimSpace(l)) != 0 {
				line, row = l, j.line-1
				break
			}
		}
	}
	*rec = Record{Row: row}
	line = bytes.TrimSpace(line)
	rawVec := line
	if !j.bare {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(line, &obj); err != nil {
			return &RowError{Row: row, Reason: jsonReason(line, err)}
		}
		var ok bool
		if rawVec, ok = obj[j.vecCol]; !ok {
			return &RowError{Row: row, Reason: fmt.Sprintf("no %q column", j.vecCol)}
		}
		var err error
		if j.idCol != "" {
			if rec.ID, err = scalarText(obj[j.idCol]); err != nil {
				return &RowError{Row: row, Reason: fmt.Sprintf("id column %q: %v", j.idCol, err)}
			}
			if rec.ID == "" {
				return &RowError{Row: row, Reason: fmt.Sprintf("empty or missing id (column %q)", j.idCol)}
			}
		}
		if j.partCol != "" {
			if rec.Partition, err = scalarText(obj[j.partCol]); err != nil {
				return &RowError{Row: row, Reason: fmt.Sprintf("partition column %q: %v", j.partCol, err)}
			}
		}
	}
	vec, err := parseFloats(rawVec, j.vec[:0])
	if err != nil {
		return &RowError{Row: row, Reason: err.Error()}
	}
	j.vec = vec
	if err := checkRow(row, vec, &j.dim, j.fixedDim); err != nil {
		return err
	}
	rec.Vector = vec
	return nil
}

// jsonReason turns a JSON syntax error into a reason that names the likely cause.
func jsonReason(line []byte, err error) string {
	for _, w := range [][]byte{[]byte("NaN"), []byte("Infinity")} {
		if bytes.Contains(line, w) {
			return fmt.Sprintf("contains %s, which is not JSON and not a valid vector component", w)
		}
	}
	return "malformed JSON: " + err.Error()
}

// scalarText returns a JSON string's value or a number's text; null and absent give "".
func scalarText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return "", nil
	case raw[0] == '"':
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	case raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9'):
		return string(raw), nil
	}
	return "", fmt.Errorf("want a string or a number, got %s", truncate(raw))
}

func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// parseFloats parses a JSON array of numbers into dst. It is hand-written because it runs
// once per component of every row of a file: encoding/json's reflection made it the
// import's bottleneck.
func parseFloats(raw []byte, dst []float32) ([]float32, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) < 2 || raw[0] != '[' || raw[len(raw)-1] != ']' {
		if len(raw) == 0 || string(raw) == "null" {
			return nil, fmt.Errorf("vector is null")
		}
		return nil, fmt.Errorf("vector is not a JSON array of numbers: %s", truncate(raw))
	}
	body := raw[1 : len(raw)-1]
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, fmt.Errorf("vector is empty")
	}
	for i := 0; len(body) > 0; i++ {
		var tok []byte
		if c := bytes.IndexByte(body, ','); c >= 0 {
			tok, body = body[:c], body[c+1:]
			if len(bytes.TrimSpace(body)) == 0 {
				return nil, fmt.Errorf("vector has a trailing comma")
			}
		} else {
			tok, body = body, nil
		}
		tok = bytes.TrimSpace(tok)
		if len(tok) > 0 && (tok[0] == 'N' || tok[0] == 'I' || (tok[0] == '-' && len(tok) > 1 && tok[1] == 'I')) {
			return nil, fmt.Errorf("component %d is %s", i, tok)
		}
		if !jsonNumber(tok) {
			return nil, fmt.Errorf("component %d is not a number: %s", i, truncate(tok))
		}
		f, err := strconv.ParseFloat(string(tok), 32)
		if err != nil {
			return nil, fmt.Errorf("component %d: %s does not fit a float32", i, tok)
		}
		dst = append(dst, float32(f))
	}
	return dst, nil
}

// jsonNumber reports whether tok is a JSON number (no leading '+', no hex, no '.5').
func jsonNumber(tok []byte) bool {
	if len(tok) == 0 {
		return false
	}
	i := 0
	if tok[0] == '-' {
		i++
	}
	if i >= len(tok) || tok[i] < '0' || tok[i] > '9' {
		return false
	}
	for ; i < len(tok); i++ {
		c := tok[i]
		if !(c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
			return false
		}
	}
	return true
}

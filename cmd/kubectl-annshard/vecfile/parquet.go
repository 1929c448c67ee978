package vecfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/parquet-go/parquet-go"
)

// parquetFile reads a vector column (a list of float, double or integer) and optional
// scalar id and partition columns, column chunk by column chunk: only the columns it
// needs are read, whatever else the file holds (text, images).
type parquetFile struct {
	f        *os.File
	pf       *parquet.File
	vec      parquet.LeafColumn
	id, part *parquet.LeafColumn
	vecName  string
	rows     int64

	rg               int // next row group
	vecC, idC, partC *columnCursor
	row              int64
	dim              int
	fixedDim         bool
	out              []float32
}

func newParquet(f *os.File, size int64, opt Options) (*parquetFile, error) {
	pf, err := parquet.OpenFile(f, size)
	if err != nil {
		return nil, fmt.Errorf("not a readable Parquet file: %w", err)
	}
	p := &parquetFile{f: f, pf: pf, rows: pf.NumRows(), dim: opt.Dim, fixedDim: opt.Dim > 0}
	schema := pf.Schema()
	// Top-level fields and the leaf columns under each.
	leaves := map[string][]parquet.LeafColumn{}
	var top []string
	for _, path := range schema.Columns() {
		leaf, _ := schema.Lookup(path...)
		if _, seen := leaves[path[0]]; !seen {
			top = append(top, path[0])
		}
		leaves[path[0]] = append(leaves[path[0]], leaf)
	}
	has := func(name string) bool { _, ok := leaves[name]; return ok }
	desc := fmt.Sprintf("the file has columns %s", strings.Join(top, ", "))

	vecName, err := pick(opt.VectorColumn, defaultVectorNames, has)
	if err != nil {
		return nil, fmt.Errorf("vector column: %w (%s)", err, desc)
	}
	if vecName == "" {
		// No usual name: the one column that is a list of numbers.
		var lists []string
		for _, name := range top {
			if ls := leaves[name]; len(ls) == 1 && ls[0].MaxRepetitionLevel == 1 && numericKind(ls[0]) {
				lists = append(lists, name)
			}
		}
		if len(lists) != 1 {
			return nil, fmt.Errorf("cannot tell the vector column (%s; %d are lists of numbers): name it with --vector-column", desc, len(lists))
		}
		vecName = lists[0]
	}
	vl := leaves[vecName]
	switch {
	case len(vl) != 1:
		return nil, fmt.Errorf("column %q is a group of %d columns, not a list of numbers", vecName, len(vl))
	case vl[0].MaxRepetitionLevel == 0:
		return nil, fmt.Errorf("column %q holds one %s per row, not a list: the vector column must be a list of numbers", vecName, kindName(vl[0]))
	case vl[0].MaxRepetitionLevel > 1:
		return nil, fmt.Errorf("column %q is a nested list (a list of lists): want one flat list of numbers per row", vecName)
	case !numericKind(vl[0]):
		return nil, fmt.Errorf("column %q is a list of %s: want float, double or integers", vecName, kindName(vl[0]))
	}
	p.vec, p.vecName = vl[0], vecName

	scalar := func(what, want string, defaults []string) (*parquet.LeafColumn, error) {
		name, err := pick(want, defaults, has)
		if err != nil || name == "" {
			if err != nil {
				err = fmt.Errorf("%s column: %w (%s)", what, err, desc)
			}
			return nil, err
		}
		ls := leaves[name]
		if len(ls) != 1 || ls[0].MaxRepetitionLevel != 0 {
			return nil, fmt.Errorf("%s column %q must hold one value per row", what, name)
		}
		switch ls[0].Node.Type().Kind() {
		case parquet.ByteArray, parquet.Int32, parquet.Int64, parquet.FixedLenByteArray:
		default:
			return nil, fmt.Errorf("%s column %q is %s: want a string or an integer", what, name, kindName(ls[0]))
		}
		return &ls[0], nil
	}
	if p.id, err = scalar("id", opt.IDColumn, defaultIDNames); err != nil {
		return nil, err
	}
	if p.part, err = scalar("partition", opt.PartitionColumn, defaultPartitionNames); err != nil {
		return nil, err
	}
	return p, nil
}

func numericKind(l parquet.LeafColumn) bool {
	switch l.Node.Type().Kind() {
	case parquet.Float, parquet.Double, parquet.Int32, parquet.Int64:
		return true
	}
	return false
}

func kindName(l parquet.LeafColumn) string {
	return strings.ToLower(l.Node.Type().Kind().String())
}

func (p *parquetFile) Format() string {
	s := fmt.Sprintf("parquet (vector column %q, list of %s", p.vecName, kindName(p.vec))
	if p.id != nil {
		s += fmt.Sprintf(", id column %q", strings.Join(p.id.Path, "."))
	}
	return s + ")"
}
func (p *parquetFile) Dim() int            { return p.dim }
func (p *parquetFile) Rows() int64         { return p.rows }
func (p *parquetFile) HasIDs() bool        { return p.id != nil }
func (p *parquetFile) HasPartitions() bool { return p.part != nil }
func (p *parquetFile) Close() error        { return p.f.Close() }

func (p *parquetFile) Next(rec *Record) error {
	for p.vecC == nil || p.vecC.done() {
		if p.rg >= len(p.pf.RowGroups()) {
			return io.EOF
		}
		chunks := p.pf.RowGroups()[p.rg].ColumnChunks()
		p.rg++
		p.vecC = newColumnCursor(chunks[p.vec.ColumnIndex])
		p.idC, p.partC = nil, nil
		if p.id != nil {
			p.idC = newColumnCursor(chunks[p.id.ColumnIndex])
		}
		if p.part != nil {
			p.partC = newColumnCursor(chunks[p.part.ColumnIndex])
		}
	}
	row := p.row
	p.row++
	*rec = Record{Row: row}
	values, err := p.vecC.nextRow()
	if err != nil {
		return fmt.Errorf("row %d: reading column %q: %w", row, p.vecName, err)
	}
	var idErr, partErr error
	if p.idC != nil {
		rec.ID, idErr = p.scalarRow(p.idC, "id", row)
	}
	if p.partC != nil {
		rec.Partition, partErr = p.scalarRow(p.partC, "partition", row)
	}
	if idErr != nil || partErr != nil {
		return errors.Join(idErr, partErr)
	}
	if p.idC != nil && rec.ID == "" {
		return &RowError{Row: row, Reason: "id is null or empty"}
	}
	p.out = p.out[:0]
	maxDef := p.vec.MaxDefinitionLevel
	for i, v := range values {
		if v.DefinitionLevel() < maxDef {
			if len(values) == 1 {
				return &RowError{Row: row, Reason: "vector is null or empty"}
			}
			return &RowError{Row: row, Reason: fmt.Sprintf("component %d is null", i)}
		}
		switch v.Kind() {
		case parquet.Float:
			p.out = append(p.out, v.Float())
		case parquet.Double:
			p.out = append(p.out, float32(v.Double()))
		case parquet.Int32:
			p.out = append(p.out, float32(v.Int32()))
		case parquet.Int64:
			p.out = append(p.out, float32(v.Int64()))
		}
	}
	if err := checkRow(row, p.out, &p.dim, p.fixedDim); err != nil {
		return err
	}
	rec.Vector = p.out
	return nil
}

// scalarRow reads one row of an id or partition column as text. A column that ends
// before the vector column does is a corrupt file, not a bad row.
func (p *parquetFile) scalarRow(c *columnCursor, what string, row int64) (string, error) {
	vs, err := c.nextRow()
	if err != nil {
		return "", fmt.Errorf("row %d: reading the %s column: %w", row, what, err)
	}
	if len(vs) != 1 || vs[0].IsNull() {
		return "", nil
	}
	switch v := vs[0]; v.Kind() {
	case parquet.Int32:
		return strconv.FormatInt(int64(v.Int32()), 10), nil
	case parquet.Int64:
		return strconv.FormatInt(v.Int64(), 10), nil
	default:
		return string(v.ByteArray()), nil
	}
}

// columnCursor hands out one column chunk's values a row at a time (a row starts at
// every value of repetition level 0).
type columnCursor struct {
	pages  parquet.Pages
	values parquet.ValueReader
	buf    []parquet.Value
	i, n   int
	eof    bool
	row    []parquet.Value
}

func newColumnCursor(cc parquet.ColumnChunk) *columnCursor {
	return &columnCursor{pages: cc.Pages(), buf: make([]parquet.Value, 4096)}
}

// fill makes sure buf[i] is a value, unless the chunk is exhausted.
func (c *columnCursor) fill() error {
	for c.i >= c.n && !c.eof {
		if c.values == nil {
			page, err := c.pages.ReadPage()
			if err == io.EOF {
				c.eof = true
				_ = c.pages.Close()
				return nil
			}
			if err != nil {
				return err
			}
			c.values = page.Values()
		}
		n, err := c.values.ReadValues(c.buf)
		c.i, c.n = 0, n
		if err == io.EOF {
			c.values = nil
		} else if err != nil {
			return err
		}
	}
	return nil
}

func (c *columnCursor) done() bool {
	if err := c.fill(); err != nil {
		return false // nextRow reports it
	}
	return c.i >= c.n && c.eof
}

// nextRow returns the values of the next row; they are valid until the next call.
func (c *columnCursor) nextRow() ([]parquet.Value, error) {
	c.row = c.row[:0]
	for {
		if err := c.fill(); err != nil {
			return nil, err
		}
		if c.i >= c.n {
			break
		}
		v := c.buf[c.i]
		if len(c.row) > 0 && v.RepetitionLevel() == 0 {
			break
		}
		c.row = append(c.row, v.Clone())
		c.i++
	}
	if len(c.row) == 0 {
		return nil, io.ErrUnexpectedEOF
	}
	return slices.Clip(c.row), nil
}

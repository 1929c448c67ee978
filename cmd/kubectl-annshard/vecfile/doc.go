// Package vecfile reads the vector files `kubectl annshard import` and `search --file`
// accept: TEXMEX .fvecs and .bvecs, NumPy .npy (2-D, any real dtype, C or Fortran order,
// either byte order), JSON Lines and Parquet (a list-of-number column plus optional id
// and partition columns).
//
// Every reader streams: memory stays bounded by one block of rows whatever the file's
// size. Problems are of two kinds, and the split is the contract the importer builds on:
//
//   - file errors (unknown format, unsupported dtype, a truncated or corrupt file, a
//     dimension that changes in mid-file) are returned by Open, or by Next as an error
//     that is not a *RowError; the file cannot be read further;
//   - row errors (*RowError: a NaN or infinite component, a JSON line that does not parse
//     or has the wrong dimension, a null vector in Parquet) concern one row; Next can be
//     called again and goes on with the next row.
//
// Truncation of the fixed-size formats (.fvecs, .bvecs, .npy) is found by Open from the
// file size, before any row is read.
//
// Concurrency: a Reader is used by one goroutine at a time.
package vecfile

// Package wal is the storage layer of a shard server: a write-ahead log of opaque
// records numbered by a sequence, and checksummed snapshot files. It knows nothing of
// vectors; the shard encodes its writes into record payloads and its graph into
// snapshots, and replays the log after the newest snapshot on start-up.
//
// # Log layout
//
// A log is a directory of segment files named by the sequence number of their first
// record, "%020d.wal", so a lexical sort is the log order. A segment starts with a
// 32-byte header:
//
//	magic "ANNSWAL\x00" | version uint32 (1) | reserved uint32 | first seq uint64 |
//	crc32c of the preceding 24 bytes uint32 | zero uint32
//
// followed by records, each framed as (all integers little endian):
//
//	len uint32 | crc uint32 | seq uint64 | data [len]byte
//
// crc is CRC-32C (Castagnoli) of data followed by the 4 bytes of len and the 8 bytes
// of seq. Data comes first so that appenders checksum their payload before taking
// the log's lock and only the 12 header bytes are hashed inside it. Sequence numbers
// are consecutive across the whole log: each record's seq is the previous one plus
// one, and a segment's header names the seq of its first record, even when it is
// still empty. A segment is created as a ".tmp" file, fsynced, renamed and the
// directory fsynced, so a segment with a bad header is corruption, never a crash.
//
// Reset writes a RESET marker (by temp file and rename) naming its seq before it
// removes the old segments and deletes the marker after the new empty segment
// exists; Open finds a marker left by a crash and redoes the reset, so what remains
// of a dropped history is never replayed.
//
// An open Log holds an advisory lock on the file LOCK in its directory, so a second
// Open of the same directory, in any process, fails with [ErrLocked].
//
// # Durability
//
// Appenders queue their framed records; one writer goroutine takes the whole queue,
// writes it with one write(2) and, in [SyncAlways] mode, one fdatasync, and then
// releases every appender of the batch together (group commit). A record is
// acknowledged (Append returns, [Log.LastSeq] covers it, Read and Follow deliver it)
// only after that. In [SyncInterval] mode Append returns once the batch is in the page
// cache and the writer fsyncs every Options.SyncInterval: a crash of the process loses
// nothing, but a crash of the machine loses the records acknowledged during the last
// interval (plus the time the fsync takes).
//
// Recovery ([Open]) checks every record of every segment. A bad record in the last
// segment that is followed only by bytes that do not frame a valid record (a torn
// write: a prefix of the last batch, or zeros) is cut off with everything after it; a
// bad record anywhere else, a bad record followed by a valid one, a bad segment header
// or a gap in the sequence is [ErrCorrupt], wrapped with the segment and offset, and
// nothing is changed. A power loss that persists the pages of an unsynced batch out of
// order can therefore be reported as corruption rather than repaired: that asks an
// operator (or a replica re-bootstrap) instead of guessing which records were valid.
//
// # Snapshots
//
// Snapshots live in their own directory as "snap-%020d.snap" (the seq the snapshot
// includes): the payload, then a 32-byte trailer
//
//	magic "ANNSNAP1" | seq uint64 | payload length uint64 | crc32c of payload uint32 |
//	crc32c of the preceding 28 bytes uint32
//
// written as "snap-%020d.tmp", fsynced, renamed and the directory fsynced; the one
// written and the newest before it are kept. [Snapshots] lists them: trim the log
// before the older one, so that the fallback below still finds its records.
// Loading checks the checksum as the caller reads the payload (the reader fails at
// its end instead of returning io.EOF) and falls back to the previous snapshot when
// the newest is bad or the caller rejects it.
//
// # Concurrency
//
// Every method of [Log] is safe for concurrent use. Append, AppendAt and Sync from
// many goroutines share writes and fsyncs. Read and Follow read the segment files
// through their own file descriptors without holding the log's lock while fn runs,
// so any number of followers never block appenders; a slow follower only delays
// itself. Reset and Close wait for the batch being written. The snapshot functions
// are safe for concurrent readers, but one directory must have a single writer.
package wal

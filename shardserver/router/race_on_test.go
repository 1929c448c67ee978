//go:build race

package router

// raceEnabled skips the real-process test under -race: the detector sees nothing of
// other processes, and the plain pass runs the same test.
const raceEnabled = true

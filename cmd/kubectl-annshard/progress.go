package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progress shows how an import goes: a bar with rate and time left on a terminal, a line
// every tick otherwise (logs, CI), nothing with --no-progress.
type progress struct {
	bar   *progressbar.ProgressBar
	w     io.Writer
	total int64
	start time.Time

	mu    sync.Mutex
	done  int64
	stop  chan struct{}
	wg    sync.WaitGroup
	plain bool
}

func newProgress(w io.Writer, total int64, tick time.Duration, off bool) *progress {
	p := &progress{w: w, total: total, start: time.Now(), stop: make(chan struct{})}
	switch {
	case off:
	case isTerminal(w):
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("importing"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("vectors"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionFullWidth(),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		)
	default:
		p.plain = true
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			t := time.NewTicker(tick)
			defer t.Stop()
			for {
				select {
				case <-p.stop:
					return
				case <-t.C:
					p.line()
				}
			}
		}()
	}
	return p
}

func (p *progress) add(n int64) {
	p.mu.Lock()
	p.done += n
	p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Add64(n)
	}
}

// line prints "imported 120000/1000000 vectors (12.0%), 10234 vectors/s, 1m26s left".
func (p *progress) line() {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	el := time.Since(p.start).Seconds()
	rate := float64(done) / max(el, 1e-9)
	left := "?"
	if rate > 0 && p.total >= done {
		left = (time.Duration(float64(p.total-done)/rate) * time.Second / time.Second * time.Second).Round(time.Second).String()
	}
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(done) / float64(p.total)
	}
	fmt.Fprintf(p.w, "imported %d/%d vectors (%.1f%%), %.0f vectors/s, %s left\n", done, p.total, pct, rate, left)
}

func (p *progress) finish() {
	if p.plain {
		close(p.stop)
		p.wg.Wait()
	}
	if p.bar != nil {
		_ = p.bar.Exit()
		fmt.Fprintln(p.w)
	}
}

package pglocal

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
)

// serverLogLines is how many of the server's last log lines an error message quotes.
const serverLogLines = 15

// serverLog receives the server's stderr: it passes each line to the logger at level and keeps
// the last few for error messages. exec.Cmd writes to it from one goroutine; tail may be called
// from another.
type serverLog struct {
	log     *slog.Logger
	level   slog.Leveler
	mu      sync.Mutex
	partial []byte
	lines   []string
}

func (l *serverLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(l.partial[:i])
		l.partial = l.partial[i+1:]
		l.log.Log(context.Background(), l.level.Level(), "postgres log", "line", line)
		l.lines = append(l.lines, line)
		if len(l.lines) > serverLogLines {
			l.lines = l.lines[len(l.lines)-serverLogLines:]
		}
	}
}

// tail returns the last lines the server wrote.
func (l *serverLog) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(append(l.lines, string(l.partial)), "\n")
}

// contains reports whether one of the last lines contains s.
func (l *serverLog) contains(s string) bool {
	return strings.Contains(l.tail(), s)
}

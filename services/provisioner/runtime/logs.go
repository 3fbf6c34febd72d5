package runtime

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
)

// Logs returns the tenant's output as plain text; see [Runtime.Logs]. The engine multiplexes
// stdout and stderr into one framed stream; the returned reader yields the demultiplexed
// bytes of both, in the order the engine sent them. Close releases the connection and waits
// for the copying goroutine to end.
func (d *Docker) Logs(ctx context.Context, envID int64, opts LogOptions) (io.ReadCloser, error) {
	c, err := d.inspect(ctx, envID)
	if err != nil {
		return nil, err
	}
	o := container.LogsOptions{
		ShowStdout: true,
		ShowStderr: true,
		Follow:     opts.Follow,
		Timestamps: opts.Timestamps,
		Tail:       "all",
	}
	if opts.Tail > 0 {
		o.Tail = strconv.Itoa(opts.Tail)
	}
	if !opts.Since.IsZero() {
		o.Since = fmt.Sprintf("%d.%09d", opts.Since.Unix(), opts.Since.Nanosecond())
	}
	body, err := d.cli.ContainerLogs(ctx, c.ID, o)
	if err != nil {
		return nil, fmt.Errorf("logs of %s: %w", d.ContainerName(envID), err)
	}
	if c.Config.Tty {
		// A TTY stream is not multiplexed. Containers made here never have one, but a
		// container made from the compose file by hand might.
		return body, nil
	}
	return newDemuxReader(body), nil
}

// tailLogs returns the last n lines of a container's output, stdout and stderr merged.
func (d *Docker) tailLogs(ctx context.Context, containerID string, n int) ([]byte, error) {
	if n <= 0 {
		return nil, nil
	}
	return d.readLogs(ctx, containerID, container.LogsOptions{Tail: strconv.Itoa(n)})
}

// readLogs reads a container's output selected by o (never following), stdout and stderr
// merged.
func (d *Docker) readLogs(ctx context.Context, containerID string, o container.LogsOptions) ([]byte, error) {
	o.ShowStdout, o.ShowStderr, o.Follow = true, true, false
	body, err := d.cli.ContainerLogs(ctx, containerID, o)
	if err != nil {
		return nil, fmt.Errorf("logs of %s: %w", containerID, err)
	}
	defer body.Close()
	var buf bytes.Buffer
	if _, err := stdcopy.StdCopy(&buf, &buf, body); err != nil {
		return buf.Bytes(), fmt.Errorf("read logs of %s: %w", containerID, err)
	}
	return buf.Bytes(), nil
}

// demuxReader turns the engine's multiplexed log stream into plain bytes through a pipe fed
// by one goroutine.
type demuxReader struct {
	pr   *io.PipeReader
	body io.ReadCloser
	done chan struct{}
}

func newDemuxReader(body io.ReadCloser) *demuxReader {
	pr, pw := io.Pipe()
	r := &demuxReader{pr: pr, body: body, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		_, err := stdcopy.StdCopy(pw, pw, body)
		// A nil err closes the pipe with io.EOF for the reader.
		pw.CloseWithError(err)
	}()
	return r
}

// Read reads demultiplexed log bytes.
func (r *demuxReader) Read(p []byte) (int, error) { return r.pr.Read(p) }

// Close stops the stream and waits for the copying goroutine to return. It is safe to call
// more than once.
func (r *demuxReader) Close() error {
	err := r.body.Close()
	_ = r.pr.Close()
	<-r.done
	return err
}

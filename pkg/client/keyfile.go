package client

import (
	"errors"
	"os"
	"strings"
	"sync"
	"time"
)

// keyFileCheck is how often a client looks whether its key file changed.
const keyFileCheck = time.Second

// keyFile is an API key kept in a file and read again at most every keyFileCheck: the platform
// rotates a tenant's key by replacing the key file in its container, and the old key goes on
// working for a while (the rotation's overlap), so a change seen within keyFileCheck is in
// time. The file is read, not just looked at: a replaced file may keep its size and, to the
// second, its modification time. A file that is missing, empty or unreadable for a moment (it
// is being replaced) leaves the key as it was.
type keyFile struct {
	path string

	mu      sync.Mutex
	key     string
	checked time.Time
}

// readKeyFile reads the key at path.
func readKeyFile(path string) (*keyFile, error) {
	f := &keyFile{path: path}
	if err := f.read(); err != nil {
		return nil, err
	}
	return f, nil
}

// read reads the file; the key stays as it was when the file cannot be read or is empty.
func (f *keyFile) read() error {
	f.checked = time.Now()
	b, err := os.ReadFile(f.path) //nolint:gosec // The file the environment names, as documented.
	if err != nil {
		return err
	}
	key := strings.TrimSpace(string(b))
	if key == "" {
		return errors.New("the key file is empty")
	}
	f.key = key
	return nil
}

// current returns the key, read again at most once per keyFileCheck.
func (f *keyFile) current() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.checked) >= keyFileCheck {
		f.reload()
	}
	return f.key
}

// refresh reads the file again now, and reports whether the key changed: a call refused 401
// may have used a key the file no longer holds.
func (f *keyFile) refresh() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reload()
}

// reload reads the file again and reports whether the key changed.
func (f *keyFile) reload() bool {
	old := f.key
	_ = f.read() // A file being replaced is read at the next look.
	return f.key != old
}

package platform

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// adminTokenFile is where a generated admin token is kept, inside the data dir.
const adminTokenFile = "admin-token"

// resolveAdminToken returns the configured admin token, or the one saved in the data dir, or a
// new one it generates and saves (mode 0600). A new token is printed once to out, since the
// operator has no other way to learn it; it is never logged.
func resolveAdminToken(configured, dataDir string, out io.Writer) (string, error) {
	if configured != "" {
		return configured, nil
	}
	path := filepath.Join(dataDir, adminTokenFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if tok := strings.TrimSpace(string(b)); tok != "" {
			return tok, nil
		}
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("read admin token: %w", err)
	}
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	tok := "cvg_admin_" + base64.RawURLEncoding.EncodeToString(raw[:])
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("save admin token: %w", err)
	}
	fmt.Fprintf(out, "\nGenerated an admin token (saved to %s; shown only now):\n\n    %s\n\n", path, tok)
	return tok, nil
}

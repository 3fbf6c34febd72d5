package pglocal

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"
)

// loopbackIPv4 is where Start reaches the server, and all it listens on by default.
const loopbackIPv4 = "127.0.0.1"

// hbaFileName is the pg_hba.conf that Start writes into the data directory, and points the
// server at, when Config.Password is set. The cluster's own pg_hba.conf is left as initdb
// wrote it.
const hbaFileName = "pglocal_hba.conf"

// scramIterations is the PBKDF2 iteration count of stored verifiers, PostgreSQL's default
// (scram_iterations).
const scramIterations = 4096

// loopbackOnly reports whether every entry of a listen_addresses list is a loopback address.
func loopbackOnly(addrs string) bool {
	for _, a := range strings.Split(addrs, ",") {
		a = strings.TrimSpace(a)
		if ip := net.ParseIP(a); a != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return false
		}
	}
	return true
}

// listenAddresses is the listen_addresses setting: the configured list, with 127.0.0.1 added
// unless the list already covers it.
func listenAddresses(addrs string) string {
	for _, a := range strings.Split(addrs, ",") {
		switch strings.TrimSpace(a) {
		case "*", "0.0.0.0", loopbackIPv4, "localhost":
			return addrs
		}
	}
	return loopbackIPv4 + "," + addrs
}

// hbaRules is the pg_hba.conf for a server with a password: every role over loopback and the
// Unix socket without one, as initdb's trust configuration does, and the role named Database
// from anywhere else with scram-sha-256. The first matching line decides.
func hbaRules() string {
	role := pgx.Identifier{Database}.Sanitize()
	return "# Written by pglocal at every start; changes are overwritten.\n" +
		"local all all               trust\n" +
		"host  all all 127.0.0.1/32  trust\n" +
		"host  all all ::1/128       trust\n" +
		"host  all " + role + " 0.0.0.0/0 scram-sha-256\n" +
		"host  all " + role + " ::/0      scram-sha-256\n"
}

// writeHBAFile writes rules as pglocal's pg_hba.conf into the data directory, for the owner
// to read.
func writeHBAFile(dir string, o owner, rules string) (string, error) {
	path := filepath.Join(dir, hbaFileName)
	if err := os.WriteFile(path, []byte(rules), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", hbaFileName, err)
	}
	if err := o.chown(path); err != nil {
		return "", err
	}
	return path, nil
}

// setPassword stores the SCRAM-SHA-256 verifier of password in role. PostgreSQL keeps a
// string in this format as it is, so the password never reaches the server or its log.
func setPassword(ctx context.Context, conn *pgx.Conn, role, password string) error {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return fmt.Errorf("password salt: %w", err)
	}
	verifier, err := scramVerifier(password, salt, scramIterations)
	if err != nil {
		return err
	}
	// A utility statement takes no parameters; the verifier holds only base64, '$' and ':'.
	stmt := "ALTER ROLE " + pgx.Identifier{role}.Sanitize() + " PASSWORD '" + verifier + "'"
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("set password of role %s: %w", role, err)
	}
	return nil
}

// scramVerifier returns the SCRAM-SHA-256 verifier of a password in PostgreSQL's format,
// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> (RFC 5802 and RFC 7677), as
// libpq's PQencryptPasswordConn computes it.
func scramVerifier(password string, salt []byte, iterations int) (string, error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("derive password key: %w", err)
	}
	clientKey := hmacSHA256(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := hmacSHA256(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(storedKey[:]), b64(serverKey)), nil
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg)) // a hash.Hash never returns an error
	return m.Sum(nil)
}

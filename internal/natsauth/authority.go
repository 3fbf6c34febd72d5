// Package natsauth gives every part of the platform its own identity on NATS, with NATS's
// decentralized JWT authentication: an operator signs two accounts (the system account the
// server needs for itself, and the platform's account, with JetStream), and the platform's
// account signs one user per role. A user's JWT carries the subjects it may publish to and
// subscribe on, so the server itself refuses what a role may not do; nobody connects without
// a user.
//
// The three keys (operator, system account, platform account) are kept as seeds in a directory
// ([LoadOrCreate]). Whoever holds them runs the server ([Authority.Configure]) and issues users
// ([Authority.Creds], [Authority.Connect]); the services of `make run` and the tests hold them
// in process, the compose stack's NATS container in its volume.
package natsauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Authority holds the keys that sign the platform's accounts and users, in dir.
type Authority struct {
	dir                       string
	operator, system, account nkeys.KeyPair
}

// The seed files in an authority's directory.
const (
	operatorFile = "operator.nk"
	systemFile   = "system-account.nk"
	accountFile  = "platform-account.nk"
	// revokedFile lists the revoked users: public key to the time before which their JWTs
	// no longer count (Unix seconds), as JSON.
	revokedFile = "revoked-users.json"
)

// LoadOrCreate reads the authority kept in dir, or makes a new one there when dir holds none
// (the directory is created with mode 0700, each seed file with 0600). An authority made once
// stays: users issued from it keep working across restarts.
func LoadOrCreate(dir string) (*Authority, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("nats auth dir: %w", err)
	}
	a := &Authority{dir: dir}
	keys := []struct {
		file   string
		kp     *nkeys.KeyPair
		create func() (nkeys.KeyPair, error)
	}{
		{operatorFile, &a.operator, nkeys.CreateOperator},
		{systemFile, &a.system, nkeys.CreateAccount},
		{accountFile, &a.account, nkeys.CreateAccount},
	}
	for _, k := range keys {
		kp, err := loadOrCreateKey(filepath.Join(dir, k.file), k.create)
		if err != nil {
			return nil, err
		}
		*k.kp = kp
	}
	return a, nil
}

// DirIn is where a data dir (`serve -data-dir`) keeps its NATS authority.
func DirIn(dataDir string) string { return filepath.Join(dataDir, "nats-auth") }

// Load reads the authority kept in dir, and fails when there is none.
func Load(dir string) (*Authority, error) {
	if _, err := os.Stat(filepath.Join(dir, operatorFile)); err != nil {
		return nil, fmt.Errorf("no NATS authority in %s (%w): it is made when the platform's NATS server first starts (make run, or `convergence nats`); point -data-dir or -nats.auth-dir at it", dir, err)
	}
	return LoadOrCreate(dir)
}

func loadOrCreateKey(path string, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
	seed, err := os.ReadFile(path) //nolint:gosec // The path is the authority's own directory.
	if err == nil {
		kp, err := nkeys.FromSeed(seed)
		if err != nil {
			return nil, fmt.Errorf("nats auth key %s is damaged: %w; remove the directory to make a new authority (issued credentials then stop working)", path, err)
		}
		return kp, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read nats auth key: %w", err)
	}
	kp, err := create()
	if err != nil {
		return nil, fmt.Errorf("make nats key: %w", err)
	}
	if seed, err = kp.Seed(); err != nil {
		return nil, fmt.Errorf("nats key seed: %w", err)
	}
	// O_EXCL: two processes making the same authority at once must not each write a key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) //nolint:gosec // As above.
	if err != nil {
		return nil, fmt.Errorf("write nats auth key: %w", err)
	}
	if _, err := f.Write(seed); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("write nats auth key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write nats auth key: %w", err)
	}
	return kp, nil
}

// Account names, as the server and the `nats` CLI show them.
const (
	systemAccountName   = "SYS"
	platformAccountName = "CONVERGENCE"
)

// Configure makes opts trust the authority's operator and serve its two accounts, so that only
// users it issued may connect. JetStream is enabled for the platform account only.
func (a *Authority) Configure(opts *server.Options) error {
	opPub, _ := a.operator.PublicKey()
	sysPub, _ := a.system.PublicKey()
	accPub, _ := a.account.PublicKey()

	op := jwt.NewOperatorClaims(opPub)
	op.Name = "convergence"
	op.SystemAccount = sysPub
	if _, err := op.Encode(a.operator); err != nil {
		return fmt.Errorf("sign operator: %w", err)
	}
	sys := jwt.NewAccountClaims(sysPub)
	sys.Name = systemAccountName
	sysJWT, err := sys.Encode(a.operator)
	if err != nil {
		return fmt.Errorf("sign system account: %w", err)
	}
	_, accJWT, err := a.platformAccount()
	if err != nil {
		return err
	}
	resolver := &server.MemAccResolver{}
	if err := resolver.Store(sysPub, sysJWT); err != nil {
		return err
	}
	if err := resolver.Store(accPub, accJWT); err != nil {
		return err
	}
	opts.TrustedOperators = []*jwt.OperatorClaims{op}
	opts.AccountResolver = resolver
	opts.SystemAccount = sysPub
	// A client's CONNECT line carries its JWT, permissions and all; the default limit of 4 KiB
	// leaves the integrator's little room.
	opts.MaxControlLine = max(opts.MaxControlLine, 16<<10)
	return nil
}

// platformAccount signs the platform account's claims, with the users revoked so far.
func (a *Authority) platformAccount() (*jwt.AccountClaims, string, error) {
	accPub, _ := a.account.PublicKey()
	acc := jwt.NewAccountClaims(accPub)
	acc.Name = platformAccountName
	revoked, err := a.revoked()
	if err != nil {
		return nil, "", err
	}
	for user, before := range revoked {
		acc.RevokeAt(user, time.Unix(before, 0))
	}
	acc.Limits.JetStreamLimits = jwt.JetStreamLimits{
		MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit,
		Streams: jwt.NoLimit, Consumer: jwt.NoLimit, MaxAckPending: jwt.NoLimit,
	}
	token, err := acc.Encode(a.operator)
	if err != nil {
		return nil, "", fmt.Errorf("sign platform account: %w", err)
	}
	return acc, token, nil
}

// ApplyRevocations gives srv, running with [Authority.Configure]'s options, the users revoked
// since: it closes their connections and refuses them from now on.
func (a *Authority) ApplyRevocations(srv *server.Server) error {
	claims, token, err := a.platformAccount()
	if err != nil {
		return err
	}
	acc, err := srv.LookupAccount(claims.Subject)
	if err != nil {
		return fmt.Errorf("find the platform account: %w", err)
	}
	if err := srv.AccountResolver().Store(claims.Subject, token); err != nil {
		return fmt.Errorf("store the platform account: %w", err)
	}
	srv.UpdateAccountClaims(acc, claims)
	return nil
}

// WatchRevocations applies the revoked users to srv (ApplyRevocations) whenever the file that
// keeps them changes, looking every interval, until stop is closed.
func (a *Authority) WatchRevocations(srv *server.Server, interval time.Duration, stop <-chan struct{}, logger *slog.Logger) {
	path := filepath.Join(a.dir, revokedFile)
	stamp := func() time.Time {
		st, err := os.Stat(path)
		if err != nil {
			return time.Time{}
		}
		return st.ModTime()
	}
	var seen time.Time // So a revocation made before the watch began is applied at its first look.
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := stamp()
		if now.Equal(seen) {
			continue
		}
		if err := a.ApplyRevocations(srv); err != nil {
			logger.Error("apply NATS revocations", "err", err)
			continue // Tried again at the next look.
		}
		seen = now
		logger.Info("NATS revocations applied", "file", path)
	}
}

// Revoke makes the server refuse user (a public key, as [UserOf] reads it from a credentials
// file) and every JWT issued to it until now: a server that watches the authority's directory
// (WatchRevocations, as natsx.StartEmbedded does) closes its connections within seconds, and any
// server refuses it from its next start on. It is kept in the authority's directory.
func (a *Authority) Revoke(user string) error {
	if !nkeys.IsValidPublicUserKey(user) {
		return fmt.Errorf("%q is not a NATS user's public key (U...)", user)
	}
	revoked, err := a.revoked()
	if err != nil {
		return err
	}
	revoked[user] = time.Now().Unix()
	data, err := json.MarshalIndent(revoked, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(a.dir, revokedFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("keep revocation: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("keep revocation: %w", err)
	}
	return nil
}

// revoked reads the revoked users.
func (a *Authority) revoked() (map[string]int64, error) {
	out := map[string]int64{}
	data, err := os.ReadFile(filepath.Join(a.dir, revokedFile)) //nolint:gosec // The authority's own file.
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read revoked users: %w", err)
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("revoked users file %s: %w", filepath.Join(a.dir, revokedFile), err)
	}
	return out, nil
}

// UserOf returns the public key and name of the user in a credentials file.
func UserOf(path string) (user, name string, err error) {
	uc, err := userClaims(path)
	if err != nil {
		return "", "", err
	}
	return uc.Subject, uc.Name, nil
}

// userClaims reads the user JWT of a credentials file.
func userClaims(path string) (*jwt.UserClaims, error) {
	data, err := os.ReadFile(path) //nolint:gosec // The operator names the file.
	if err != nil {
		return nil, fmt.Errorf("nats credentials: %w", err)
	}
	token, err := jwt.ParseDecoratedJWT(data)
	if err != nil {
		return nil, fmt.Errorf("nats credentials %s: %w", path, err)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return nil, fmt.Errorf("nats credentials %s: %w", path, err)
	}
	return uc, nil
}

// user issues a user of role named name, valid for ttl (forever when zero), and returns its JWT
// and seed.
func (a *Authority) user(role Role, name string, ttl time.Duration) (string, []byte, error) {
	perms, err := permissions(role)
	if err != nil {
		return "", nil, err
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", nil, fmt.Errorf("make nats user key: %w", err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	accPub, _ := a.account.PublicKey()
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	uc.IssuerAccount = accPub
	uc.Permissions = perms
	uc.Tags.Add("role:" + string(role))
	if ttl > 0 {
		uc.Expires = time.Now().Add(ttl).Unix()
	}
	token, err := uc.Encode(a.account)
	if err != nil {
		return "", nil, fmt.Errorf("sign nats user: %w", err)
	}
	return token, seed, nil
}

// Creds issues a user of role and returns it as a NATS credentials file, the form the `nats`
// CLI's --creds and nats.UserCredentials read. ttl bounds how long it is valid; zero is forever.
func (a *Authority) Creds(role Role, name string, ttl time.Duration) ([]byte, error) {
	token, seed, err := a.user(role, name, ttl)
	if err != nil {
		return nil, err
	}
	return jwt.FormatUserConfig(token, seed)
}

// Connect issues a user of role for a connection of this process and returns the options that
// connect as it: its JWT, its signature of the server's nonce, and the inbox prefix its
// permissions allow.
func (a *Authority) Connect(role Role, name string) ([]nats.Option, error) {
	token, seed, err := a.user(role, name, 0)
	if err != nil {
		return nil, err
	}
	return []nats.Option{nats.UserJWTAndSeed(token, string(seed)), inboxPrefix(role)}, nil
}

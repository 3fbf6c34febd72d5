// Package pglocal runs a PostgreSQL server from the machine's own binaries, as a child of the
// calling process. It serves development (`make run` without DATABASE_URL) and tests (through
// internal/pgtest).
//
// Start initializes a cluster in a data directory when there is none (or copies one from an
// init cache), starts `postgres` directly as a child process listening on 127.0.0.1,
// waits until it accepts connections, and makes sure the role and database "convergence"
// exist. The next Start on the same directory reuses the cluster and its data.
//
// The server never outlives the calling process: on Linux the kernel kills it when the process
// dies (Pdeathsig), and Stop shuts it down cleanly. It runs in its own process group, so a
// Ctrl-C in the terminal reaches only the calling process, which decides when to stop the
// database (after the services that use it).
//
// pglocal builds on Unix systems only. The parent-death guarantee holds on Linux; elsewhere a
// server whose parent was killed keeps running, and the next Start reports ErrInUse.
//
// PostgreSQL refuses to run as root. When the calling process is root, the data directory is
// owned by the "postgres" system user and initdb and postgres run as that user; otherwise they
// run as the current user. Authentication is "trust" by default: any local user may connect
// over loopback, which is what a test server wants. In password mode (Config.PasswordsDir),
// which `make run` uses, nothing gets in without a password, and the passwords are kept in
// files only the calling user reads.
//
// A server in a container (`convergence postgres`, which the compose stack runs) also listens
// beyond loopback (Config.ListenAddresses); it then needs Config.Password, which the
// "convergence" role must give from any other address (scram-sha-256), while loopback stays
// trusted.
package pglocal

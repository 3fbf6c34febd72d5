// Package pgtest gives every test its own fresh, fully migrated PostgreSQL database.
//
//	func TestOutbox_Relay_PublishesInOrder(t *testing.T) {
//		t.Parallel()
//		pool := pgtest.New(t) // a new database, migrated, dropped when t ends
//		...
//	}
//
// The databases live on one server per test binary. When TEST_DATABASE_URL is set, that server
// is used: its role needs CREATEDB and CREATEROLE (the migrations make the services' roles),
// and the server must be PostgreSQL 13 or newer. Otherwise the first New starts a local server
// with internal/pglocal from the machine's own binaries, in a directory under os.TempDir(),
// copying a cached initdb'd cluster so that a start takes a fraction of a second. Each test binary migrates one template database once (goose, the
// embedded migrations) and New clones it with CREATE DATABASE ... TEMPLATE, which takes
// milliseconds. When the server is shared through TEST_DATABASE_URL, building the template is
// serialized across processes by an advisory lock, and the template's name carries a hash of
// the migrations, so binaries built from different migrations do not share one.
//
// A missing PostgreSQL fails the test with a message saying how to get one; it never skips.
//
// # Wiring TestMain
//
// A package that uses pgtest stops the local server after its tests by wrapping its
// testing.M; this also keeps goleak from reporting the server's goroutines:
//
//	func TestMain(m *testing.M) {
//		goleak.VerifyTestMain(pgtest.Wrap(m))
//	}
//
// or, without goleak:
//
//	func TestMain(m *testing.M) {
//		os.Exit(pgtest.Wrap(m).Run())
//	}
//
// Without Wrap the tests still work: the server is started lazily and the kernel kills it when
// the test binary exits (on Linux, through the parent-death signal). Its data directory is then
// left behind, and the next pgtest run on the machine removes it, since no live process holds
// its lock.
//
// # Package state
//
// pgtest keeps the server of the test binary in a package variable, which the house style
// otherwise forbids: one server shared by every test of a binary is the point of the package,
// and New is called from tests that have no other place to keep it.
package pgtest

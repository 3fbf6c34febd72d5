// Package architecture holds the tests that keep the layout's promises: each service owns its
// packages, and no service imports another's. It has no code of its own.
package architecture

// Package dockertest is the test harness for code that drives the real Docker engine: a
// client that fails the test with instructions when the engine is missing, the default tenant
// image built once per test binary, unique labels and name prefixes per test so parallel
// tests and packages never touch each other's objects, cleanup of exactly those objects, free
// host ports (one at a time, or a range of consecutive ports held by one test), and the
// compose command of the machine.
package dockertest

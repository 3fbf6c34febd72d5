// Package dockertest is the test harness for code that drives the real Docker engine: a
// client that fails the test with instructions when the engine is missing, the default tenant
// image built once per test binary, unique labels and name prefixes per test so parallel
// tests and packages never touch each other's objects, cleanup of exactly those objects, free
// host ports, and the compose command of the machine.
package dockertest

// Package taskspec is the convergence task as it may be asked for: its types and their default
// roles, its fields, the limits that bound them and Normalize, which applies the defaults and
// says which field is wrong. The API checks a request with it before queueing it, and the
// converger's engine runs what it accepted: one set of rules for both.
package taskspec

// Package pgerr tells PostgreSQL's refusals apart by their SQLSTATE, for the services that
// answer a taken name or a reached limit differently from a failure.
package pgerr

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// UniqueViolation is the SQLSTATE of a taken unique key.
const UniqueViolation = "23505"

// Is reports whether err is PostgreSQL's error with SQLSTATE code.
func Is(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

// IsUniqueViolation reports whether err is PostgreSQL refusing a duplicate key of constraint,
// or of any unique constraint when constraint is "".
func IsUniqueViolation(err error, constraint string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == UniqueViolation && (constraint == "" || pgErr.ConstraintName == constraint)
}

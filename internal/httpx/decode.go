package httpx

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"

	"github.com/labstack/echo/v4"
)

// DecodeJSON decodes the request's body into v, a pointer to a struct, strictly: one JSON
// object, only fields v has, each of the right type, nothing after it. Every failure is an
// answer that says what to fix: 413 for a body over the server's limit, 400 for the rest. empty
// is what to say when there is no body at all; "" accepts an empty body and leaves v as it is.
func DecodeJSON(c echo.Context, v any, empty string) error {
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("data after the object")
	}
	var tooLarge *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooLarge):
		return Errorf(http.StatusRequestEntityTooLarge, "too_large", "the request body is over the limit of %d bytes", tooLarge.Limit)
	case errors.Is(err, io.EOF):
		if empty == "" {
			return nil
		}
		return BadRequest("the request body is empty: %s", empty)
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return BadRequest("%s: must be %s, not a JSON %s", typeErr.Field, jsonType(typeErr.Type), typeErr.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return BadRequest("%s; the fields are %s", strings.TrimPrefix(err.Error(), "json: "), strings.Join(jsonFields(v), ", "))
	default:
		return BadRequest("the body is not one valid JSON object: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
}

// jsonType names the JSON type a Go type decodes from, with its article.
func jsonType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "a boolean"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array"
	default:
		return "an object"
	}
}

// jsonFields lists the JSON names of the fields of the struct v points to.
func jsonFields(v any) []string {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var names []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.IsExported() && name != "-" {
			if name == "" {
				name = f.Name
			}
			names = append(names, name)
		}
	}
	return names
}

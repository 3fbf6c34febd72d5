package api

import (
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/swaggest/swgui/v5emb"

	contract "github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/services/api/openapi"
)

// docsRoutes serves the API's OpenAPI document and its interactive page, on the listener
// tenants reach, without a key:
//
//	GET /api-docs                 Swagger UI, its assets embedded in the binary (nothing is
//	                              loaded from elsewhere); "Try it out" with a tenant key
//	GET /api-docs/openapi.json    the document as JSON
//	GET /api-docs/openapi.yaml    the document as written
func docsRoutes(e *echo.Echo) error {
	doc, err := openapi.JSON()
	if err != nil {
		return err
	}
	ui := v5emb.New("Convergence API", "/api-docs/openapi.json", "/api-docs")
	e.GET("/api-docs/openapi.json", func(c echo.Context) error { return c.Blob(http.StatusOK, "application/json", doc) })
	e.GET("/api-docs/openapi.yaml", func(c echo.Context) error { return c.Blob(http.StatusOK, "application/yaml", contract.Document) })
	e.GET("/api-docs", echo.WrapHandler(ui))
	e.GET("/api-docs/*", echo.WrapHandler(ui))
	return nil
}

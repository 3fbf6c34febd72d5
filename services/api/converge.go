package api

import "github.com/labstack/echo/v4"

// convergeRoutes registers the tenants' convergence endpoints.
func (s *Service) convergeRoutes(tenant *echo.Group) {}

package api

import "github.com/labstack/echo/v4"

// tenantRoutes registers the operators' tenant and organization endpoints.
func (s *Service) tenantRoutes(admin *echo.Group) {}

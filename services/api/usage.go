package api

import "github.com/labstack/echo/v4"

// usageRoutes registers the usage endpoints of operators and tenants.
func (s *Service) usageRoutes(admin, tenant *echo.Group) {}

module github.com/convergence-dev/convergence/pkg/api

go 1.26.0

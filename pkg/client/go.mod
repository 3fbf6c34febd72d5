module github.com/convergence-dev/convergence/pkg/client

go 1.26.0

require github.com/convergence-dev/convergence/pkg/api v0.0.0

replace github.com/convergence-dev/convergence/pkg/api => ../api

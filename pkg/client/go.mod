module github.com/convergence-dev/convergence/pkg/client

go 1.26

require github.com/convergence-dev/convergence/pkg/events v0.0.0

replace github.com/convergence-dev/convergence/pkg/events => ../events

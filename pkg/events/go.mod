module github.com/convergence-dev/convergence/pkg/events

go 1.26

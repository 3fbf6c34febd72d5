//go:build !linux

package pgtest

// memoryDir returns "": outside Linux, pgtest keeps its data in os.TempDir().
func memoryDir() string { return "" }

//go:build !pgvault_testfaults

package main

import "github.com/pgvault/pgvault/internal/service"

// testFaultsHook is the release build's: no fault injection, and no
// environment variable that could turn it on (the test build, tag
// pgvault_testfaults, has faults_test_build.go instead).
func testFaultsHook() (func(*service.Site), error) { return nil, nil }

// Package version holds the build-time version stamp shared by every binary.
package version

// Version is set at link time with -X github.com/kguest/kguest/internal/version.Version=...
var Version = "0.0.0-dev"

// APIVersion is the version of the Kata agent wire API this build speaks.
const APIVersion uint32 = 1

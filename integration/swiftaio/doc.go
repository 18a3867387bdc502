// Package swiftaio starts a real OpenStack Swift for tests: an all-in-one
// node from Debian's packages (swift-proxy, swift-account,
// swift-container, swift-object), with a memcached for the proxy's token
// cache, on free ports of 127.0.0.1, stopped when the test ends.
//
// Each Start builds its own single-device rings (one replica) in a
// temporary folder, which also holds the device (a plain folder:
// mount_check is off; the object server keeps its metadata in user
// extended attributes, which ext4 and, on kernels from 6.6, tmpfs have)
// and every configuration file, so tests never touch /etc/swift and run
// side by side. Authentication is Swift's tempauth (v1): the account
// AUTH_test with the admin user test:tester (key "testing") and a user
// test:reader that is no admin and so is refused the account's
// containers.
//
// The packages are not vendored: `make deps` installs them
// (.ci/install-swift). A test that finds no Swift fails with that fix; it
// never skips.
package swiftaio

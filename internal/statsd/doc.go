// Package statsd sends metrics to a statsd daemon over UDP, with tags in
// Telegraf's (`name,tag=v:1|g`) or DataDog's (`name:1|g|#tag:v`) syntax:
// the two formats pghoard's `statsd` setting offers.
//
// It is a client of a few lines on purpose (no dependency): lines are
// batched into datagrams no larger than a safe UDP payload and sent by
// Flush. Delivery is best effort, as statsd's always is; a send error is
// returned so the caller can log it.
package statsd

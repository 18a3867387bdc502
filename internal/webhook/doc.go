// Package webhook delivers alert events to an HTTP endpoint: a JSON body
// per event, signed with HMAC-SHA256 when a secret is set, or a
// Slack-compatible {"text": ...} body.
//
// A Notifier never blocks its caller: Notify queues the event and one
// goroutine posts the queue in order, retrying transient failures with
// backoff. Failures are logged without the secret and without the URL's
// path or query (a Slack webhook URL is itself a secret).
package webhook

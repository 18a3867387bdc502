// Package sysloghandler sends log/slog records to syslog through the
// standard library's log/syslog (RFC 3164 framing with an RFC 3339
// timestamp, as log/syslog writes it): the slog level becomes the syslog
// severity, the record the message in slog's text form. It also parses
// the addresses and facility names of pghoard's syslog_address and
// syslog_facility settings.
package sysloghandler

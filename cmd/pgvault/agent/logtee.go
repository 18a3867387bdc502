package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
)

// teeHandler sends every record to the agent's own handler and, while one
// is set, to a second sink (syslog). The sink can be switched on, off or
// moved by a reload: loggers derived earlier with With (every site's)
// share the switch, so their attributes are replayed on the sink at each
// record rather than bound once. The base handler's level decides for
// both (log_level and --log-level apply to syslog too).
type teeHandler struct {
	base slog.Handler
	sink *atomic.Pointer[slog.Handler]
	ops  []teeOp // WithAttrs/WithGroup calls made since the root, in order
}

type teeOp struct {
	attrs []slog.Attr
	group string
}

func newTee(base slog.Handler) *teeHandler {
	return &teeHandler{base: base, sink: &atomic.Pointer[slog.Handler]{}}
}

// setSink replaces the second sink (nil: none).
func (t *teeHandler) setSink(h slog.Handler) {
	if h == nil {
		t.sink.Store(nil)
		return
	}
	t.sink.Store(&h)
}

func (t *teeHandler) Enabled(ctx context.Context, l slog.Level) bool { return t.base.Enabled(ctx, l) }

func (t *teeHandler) Handle(ctx context.Context, r slog.Record) error {
	err := t.base.Handle(ctx, r)
	if p := t.sink.Load(); p != nil {
		h := *p
		for _, op := range t.ops {
			if op.group != "" {
				h = h.WithGroup(op.group)
			} else {
				h = h.WithAttrs(op.attrs)
			}
		}
		if h.Enabled(ctx, r.Level) {
			err = errors.Join(err, h.Handle(ctx, r.Clone()))
		}
	}
	return err
}

func (t *teeHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return t
	}
	return &teeHandler{base: t.base.WithAttrs(attrs), sink: t.sink, ops: append(t.ops[:len(t.ops):len(t.ops)], teeOp{attrs: attrs})}
}

func (t *teeHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return t
	}
	return &teeHandler{base: t.base.WithGroup(name), sink: t.sink, ops: append(t.ops[:len(t.ops):len(t.ops)], teeOp{group: name})}
}

var _ slog.Handler = (*teeHandler)(nil)

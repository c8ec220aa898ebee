package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/sirupsen/logrus"
)

// routeLogrus sends what libraries log through logrus (ttrpc through
// containerd/log, libcontainer) to log at debug level: logrus would write
// raw, coloured lines on the console, and what it says there (a client that
// hung up, a stream that ended) is routine for the agent.
//
// Call it only in the agent proper: libcontainer's "init" re-exec sets up
// logrus itself to report to the parent over a pipe.
func routeLogrus(log *slog.Logger) {
	l := logrus.StandardLogger()
	l.SetOutput(io.Discard)
	l.SetFormatter(discardFormatter{})
	l.ReplaceHooks(logrus.LevelHooks{})
	if log.Enabled(context.Background(), slog.LevelDebug) {
		l.SetLevel(logrus.DebugLevel)
		l.AddHook(slogHook{log: log})
	} else {
		// Nothing would be shown: skip building the entries at all.
		l.SetLevel(logrus.PanicLevel)
	}
}

// slogHook forwards logrus entries to slog at debug level.
type slogHook struct{ log *slog.Logger }

func (slogHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h slogHook) Fire(e *logrus.Entry) error {
	attrs := make([]slog.Attr, 0, len(e.Data)+1)
	attrs = append(attrs, slog.String("logrus_level", e.Level.String()))
	for k, v := range e.Data {
		if err, ok := v.(error); ok {
			v = err.Error()
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	ctx := e.Context
	if ctx == nil {
		ctx = context.Background()
	}
	h.log.LogAttrs(ctx, slog.LevelDebug, e.Message, attrs...)
	return nil
}

// discardFormatter skips formatting entries whose output is discarded.
type discardFormatter struct{}

func (discardFormatter) Format(*logrus.Entry) ([]byte, error) { return nil, nil }

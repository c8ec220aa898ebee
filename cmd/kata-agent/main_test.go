package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		pid1      bool
		wantAct   action
		wantStray []string
	}{
		{"no args", nil, false, actRun, nil},
		{"no args pid1", nil, true, actRun, nil},
		{"version", []string{"--version"}, false, actVersion, nil},
		{"help", []string{"-h"}, false, actHelp, nil},
		{"unknown", []string{"quiet"}, false, actBadUsage, []string{"quiet"}},
		// The kernel passes unknown words to init: never exit on them.
		{"kernel words pid1", []string{"quiet", "splash"}, true, actRun, []string{"quiet", "splash"}},
		{"version pid1", []string{"--version"}, true, actRun, []string{"--version"}},
		{"help pid1", []string{"--help"}, true, actRun, []string{"--help"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			act, stray := parseArgs(tc.args, tc.pid1)
			if act != tc.wantAct || !reflect.DeepEqual(stray, tc.wantStray) {
				t.Fatalf("parseArgs(%q, %v) = %v, %q; want %v, %q", tc.args, tc.pid1, act, stray, tc.wantAct, tc.wantStray)
			}
		})
	}
}

func TestRouteLogrus(t *testing.T) {
	std := logrus.StandardLogger()
	out, formatter, level, hooks := std.Out, std.Formatter, std.GetLevel(), std.Hooks
	t.Cleanup(func() {
		std.SetOutput(out)
		std.SetFormatter(formatter)
		std.SetLevel(level)
		std.ReplaceHooks(hooks)
	})

	tests := []struct {
		name  string
		level slog.Level
		want  bool
	}{
		{"debug", slog.LevelDebug, true},
		{"info", slog.LevelInfo, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			routeLogrus(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: tc.level})))
			if std.Out != io.Discard {
				t.Fatalf("logrus output = %T, want io.Discard", std.Out)
			}
			// What ttrpc logs when a client hangs up.
			logrus.WithError(errors.New("session shutdown")).Error("failed sending message on channel")
			if !tc.want {
				if buf.Len() != 0 {
					t.Fatalf("logged %q with a %v logger", buf.String(), tc.level)
				}
				return
			}
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatalf("log record %q: %v", buf.String(), err)
			}
			want := map[string]any{
				"level":        "DEBUG",
				"msg":          "failed sending message on channel",
				"logrus_level": "error",
				"error":        "session shutdown",
			}
			for k, v := range want {
				if rec[k] != v {
					t.Errorf("record[%q] = %v, want %v (record %s)", k, rec[k], v, buf.String())
				}
			}
		})
	}
}

package main

import (
	"testing"
	"time"
)

func TestStat(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	tests := []struct {
		in                 []time.Duration
		med, min, max, p90 float64
	}{
		{ms(5, 1, 3), 3, 1, 5, 5},
		{ms(4, 1, 3, 2), 2.5, 1, 4, 4},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 5.5, 1, 10, 9},
	}
	for _, tt := range tests {
		s := stat(tt.in)
		if s.Median != tt.med || s.Min != tt.min || s.Max != tt.max || s.P90 != tt.p90 || s.N != len(tt.in) {
			t.Errorf("stat(%v) = %+v", tt.in, s)
		}
	}
	if stat(nil) != nil {
		t.Error("stat(nil) != nil")
	}
}

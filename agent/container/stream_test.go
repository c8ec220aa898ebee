package container

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

func TestStreamOrderAndEOF(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s := newStream(r, drainIdle)
	exited := make(chan struct{})
	go s.pump(exited)
	var want bytes.Buffer
	for i := 0; i < 2000; i++ {
		line := bytes.Repeat([]byte{byte('a' + i%26)}, i%300+1)
		want.Write(line)
		if _, err := w.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	// The writer stays open (a child inherited it): exit plus idle ends it.
	close(exited)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got bytes.Buffer
	sizes := []int{1, 7, 4096, 100000, 3}
	for i := 0; ; i++ {
		b, err := s.Read(ctx, sizes[i%len(sizes)])
		if len(b) > sizes[i%len(sizes)] {
			t.Fatalf("read %d bytes, asked %d", len(b), sizes[i%len(sizes)])
		}
		if i == 3 && len(b) > 0 {
			s.unread(b) // a reader that went away gives its data back
			continue
		}
		got.Write(b)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("got %d bytes, want %d (content differs)", got.Len(), want.Len())
	}
}

func TestStreamReadCancelled(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s := newStream(r, drainIdle)
	go s.pump(make(chan struct{}))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.Read(ctx, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	w.Write([]byte("kept"))
	b, err := s.Read(context.Background(), 10)
	if err != nil || string(b) != "kept" {
		t.Fatalf("%q %v", b, err)
	}
	s.Close()
}

// Output left in the pipe while the buffer was full is still delivered when
// the reader comes late, after the process has exited.
func TestStreamDrainsAfterFullBuffer(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s := newStream(r, drainIdle)
	exited := make(chan struct{})
	go s.pump(exited)
	total := maxBuffered + 40<<10
	if _, err := w.Write(bytes.Repeat([]byte("x"), total)); err != nil {
		t.Fatal(err)
	}
	close(exited)
	time.Sleep(4 * drainIdle)
	n := 0
	for {
		b, err := s.Read(context.Background(), 1<<20)
		n += len(b)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	if n != total {
		t.Fatalf("read %d bytes, want %d", n, total)
	}
}

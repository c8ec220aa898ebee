package kernelconfig

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// DotConfig is a resolved .config: symbol (without CONFIG_) to value.
// Symbols that are "not set" map to "n"; symbols absent from the file are
// absent from the map.
type DotConfig map[string]string

// ParseDotConfig reads a .config file.
func ParseDotConfig(r io.Reader) (DotConfig, error) {
	c := DotConfig{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := unsetRe.FindStringSubmatch(line); m != nil {
			c[m[1]] = "n"
		} else if m := setRe.FindStringSubmatch(line); m != nil {
			c[m[1]] = m[2]
		}
	}
	return c, sc.Err()
}

// ReadDotConfig reads the .config at path.
func ReadDotConfig(path string) (DotConfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := ParseDotConfig(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return c, nil
}

// Value returns sym's value, "n" when unset or absent.
func (c DotConfig) Value(sym string) string {
	if v, ok := c[sym]; ok {
		return v
	}
	return "n"
}

// Count returns how many symbols are =y and =m.
func (c DotConfig) Count() (y, m int) {
	for _, v := range c {
		switch v {
		case "y":
			y++
		case "m":
			m++
		}
	}
	return y, m
}

package osbuilder

import "sort"

func sortPaths(p []string) { sort.Slice(p, func(i, j int) bool { return pathLess(p[i], p[j]) }) }

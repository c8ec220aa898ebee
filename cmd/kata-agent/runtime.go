package main

func tuneRuntime() {}

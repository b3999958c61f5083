"""Tooling that drives ComfyUI from outside (host harness, workflow conversion and runner, demo
models, benchmarks). ComfyUI never imports this package; the pack's nodes never depend on it."""

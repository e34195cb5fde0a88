"""Benchmarks and the one-command GPU check; run each as a module from the project root."""

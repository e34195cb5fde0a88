"""The one-command GPU check behind `make gpu-check` (`bench/gpu_check.py`)."""

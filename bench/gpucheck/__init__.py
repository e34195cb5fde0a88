"""The one-command GPU check behind `make gpu-check` (`python -m bench.gpu_check`)."""

"""meerkat-bench: CPU, allocation, heap and latency figures of the firmware on the MicroPython
unix port, beside the naive path and the MicroPython WebSocket clients on PyPI. See cli.py and
docs/benchmarks.md."""

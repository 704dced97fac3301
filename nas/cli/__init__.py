"""The command-line entry points (`python -m nas.search|train|export|cost|latency`)."""

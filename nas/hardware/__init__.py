"""Latency on a device: measurement, the per-kernel lookup table, prediction."""

"""Training with Lightning: data modules, the proxy, full training."""

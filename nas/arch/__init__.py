"""The architecture core: genotype and its string codec, block types, kernels, exact cost,
search spaces. Imports no torch (a test proves it), so costing stays fast."""

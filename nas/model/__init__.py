"""Torch modules built from a genotype, optimizer groups, zero-cost scores, and the model
files an export writes. Needs torch only: no Optuna, Lightning or Hydra."""

"""What training and search both use: the config schemas and W&B tracking."""

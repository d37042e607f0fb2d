"""Per-element logic of maskmine: plain Python/PyTorch, no Beam."""

"""Per-element logic of maskmine: plain Python/PyTorch, no Beam pipeline code.

Files of a run folder, which may live on gs://, are read and written through
Beam's FileSystems (``storage``, ``image_io``, remote paths in ``atomic``),
imported inside the functions that use them, never by importing a module here.
"""

"""Jobs and the ``maskmine`` command line: wiring, not logic."""

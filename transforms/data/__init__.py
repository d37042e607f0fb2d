"""Data files shipped with transforms (a package so setup.cfg package_data ships them)."""

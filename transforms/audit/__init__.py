"""The audit of a mining run (``maskmine audit``): everything but the command line.

- ``access``: open a run folder, read Parquet rows and samples by byte offset
- ``table``: the in-memory overview and the choice of rows (frequent, rare, lowest, query, spot check)
- ``thumbs``: gallery thumbnails (outlined source image, crop preview)
- ``plots``: the summary's PNG plots
- ``scoresheet``: the spot-check CSV and its precision
- ``html``: the pages' building blocks, rendered from ``templates/`` (Jinja2, autoescaped)
- ``report``: the report folder (``build_report``)

The command line is ``maskmine.pipelines.audit_cli``.
"""

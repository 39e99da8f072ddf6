"""Reproducing a paper table from recipes: ``python -m longshort.reproduce table=tiny|paper|PATH``.

- ``tables``: the table spec (runs, analyses, rows, columns) read from ``recipes/tables/*.yaml``;
- ``run``: the spec turned into commands of the existing entry points, run resumably (the CLI);
- ``results``: the measured rows, ``table.md``, ``table.json`` and ``plot.png``;
- ``timing``: what each command spent (``timings.json``) and where, for ``table.md``.
"""

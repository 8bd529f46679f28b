"""Alembic migrations of the Hemei Grid schema, for every backend (see :mod:`gis.schema`).

``versions/`` holds one file per schema change; ``0001`` is the schema of release 0.1 (the
first, made by ``metadata.create_all`` before there were migrations), so a database made by
that release is stamped ``0001`` and upgraded from there.
"""

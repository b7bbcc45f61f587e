"""Maintenance scripts that build shipped data files (not part of the installed package).

They live outside ``benchmark/`` because they import method code (the engine never does)
and outside ``attacks/``/``defenses/``, which hold one method per file.
"""

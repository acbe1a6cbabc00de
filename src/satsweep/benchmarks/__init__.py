"""Measurement scripts whose numbers go into the docs (run with ``python -m``)."""

"""Experiments above the adaptation pipelines: the cached cell, the benchmark grid and the demo.

An experiment adapts (``medpeft.pipelines.adapt``), scores (``medpeft.evaluate``) and keeps each
finished cell's record, so that a re-run skips it.
"""

"""Datasets as position-addressable sources (a batch is a pure function of its position)."""

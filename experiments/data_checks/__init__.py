"""Checks of the data generators against the originals: generator statistics, and LRA's
Pathfinder generator (snakes2.py) emulated as a reference."""

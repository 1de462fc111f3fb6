"""Reliability drills of the trainer's command line: fault injection (faults.py, shared with
the tests), collective stress, multi-process runs, CLI mistakes, training without TensorFlow."""

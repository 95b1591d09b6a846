"""Hostile model/tensor files written from code (see files.py) and the child-process
runner that feeds them to the real loaders with a memory cap (run_loaders.py)."""

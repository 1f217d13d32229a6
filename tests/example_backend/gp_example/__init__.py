"""An example third-party gp backend (see hooks.py)."""

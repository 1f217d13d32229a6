"""An example third-party gp backend (see hooks.py)."""

from __future__ import annotations

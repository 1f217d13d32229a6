"""Shared test set-up for gp core and every plugin's tests."""

from __future__ import annotations

import os

# Test traffic stays on loopback: the response listener must never advertise another address.
os.environ["GP_RESPONSE_IP"] = "127.0.0.1"

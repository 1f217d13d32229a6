"""The built-in ``local`` backend (placeholder, being written)."""

"""Serving repositories written from an export (Triton)."""

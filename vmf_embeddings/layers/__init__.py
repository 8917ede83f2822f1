"""Reusable layers (the spherization layer and the layers built on it)."""

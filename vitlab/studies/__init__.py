"""Reproducible experiments built from the library's parts (each with a recipe in configs/)."""

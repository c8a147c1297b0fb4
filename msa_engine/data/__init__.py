"""Bundled configs and example data shipped as package data."""

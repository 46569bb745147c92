"""Configs of the top-level experiments: ``get_config(variant)`` per experiment."""

"""Configs of the noise-regime experiments: ``get_config(variant)`` per experiment."""

"""Configs of the sharpness experiments: ``get_config(variant)`` per experiment."""

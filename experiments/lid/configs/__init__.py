"""Configs of the LID experiments: ``get_config(variant)`` per experiment."""

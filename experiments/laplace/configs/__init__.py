"""Configs of the Laplace experiments: ``get_config(variant)`` per experiment."""

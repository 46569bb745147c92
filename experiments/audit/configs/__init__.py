"""Configs of the audit experiments."""

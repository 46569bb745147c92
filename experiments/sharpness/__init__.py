"""Sharpness of log p_t as a memorisation detector, and SAIL (2D mixture, conditional digits)."""

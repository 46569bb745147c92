"""Riemannian- vs Euclidean-Laplace experiments over flow-matching weights (1D, 2D, images)."""

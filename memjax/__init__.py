"""memjax: measuring and reducing memorisation in flow-matching and diffusion models with geometry."""
__version__ = "0.1.0"

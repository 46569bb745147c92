"""Experiments of the memorisation audit (:mod:`memjax.audit`)."""

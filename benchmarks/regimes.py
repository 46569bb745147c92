"""Throughput of the empirical optimal denoiser D*_σ(y): chunked log-sum-exp vs dense softmax.

Prints query-denoisings per second (one query = one D*_σ(y) against all N training points)
for :func:`memjax.denoisers.posterior` (chunked) and the dense ``(Q, N)`` softmax, and their
ratio::

  python benchmarks/regimes.py
"""

import time

import jax
import jax.numpy as jnp

from memjax import denoisers


def _rate(fn, *args, repeats=3):
  """Queries per second of ``fn(train, y, sigma)`` after one warm-up (compile) call."""
  fn(*args).block_until_ready()
  start = time.perf_counter()
  for _ in range(repeats):
    fn(*args).block_until_ready()
  return repeats * args[1].shape[0] / (time.perf_counter() - start)


def main():
  dense = jax.jit(
    lambda tr, y, s: (
      jax.nn.softmax(-jnp.sum((y[:, None, :] - tr[None]) ** 2, -1) / (2 * s**2), axis=1) @ tr
    )
  )
  chunked = jax.jit(
    lambda tr, y, s: (
      denoisers.posterior(tr, y, s, psi=1.0, query_chunk=256, train_chunk=1024).denoiser
    )
  )
  print(f"{'N':>6} {'d':>4} {'Q':>5} {'chunked q/s':>12} {'dense q/s':>12} {'ratio':>6}")
  for n, d in ((1024, 2), (1024, 64), (8192, 64)):
    key = jax.random.PRNGKey(n + d)
    train = jax.random.normal(key, (n, d))
    y = jax.random.normal(jax.random.fold_in(key, 1), (1024, d))
    s = jnp.asarray(0.5)
    rate_chunked = _rate(chunked, train, y, s)
    rate_dense = _rate(dense, train, y, s)
    print(
      f"{n:>6} {d:>4} {y.shape[0]:>5} {rate_chunked:>12.0f} {rate_dense:>12.0f} "
      f"{rate_chunked / rate_dense:>6.2f}"
    )


if __name__ == "__main__":
  main()

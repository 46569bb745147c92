"""Throughput of the empirical optimal denoiser D*_σ(y): chunked log-sum-exp vs the dense (Q, N) softmax.

Prints query-denoisings per second (one query = one D*_σ(y) against all N training points)
and the chunked/dense ratio::

  python benchmarks/regimes.py
"""
import time

import jax
import jax.numpy as jnp

from memjax import regimes


def _rate(fn, q, repeats=3):
  fn().block_until_ready()  # compile
  start = time.perf_counter()
  for _ in range(repeats):
    fn().block_until_ready()
  return repeats * q / (time.perf_counter() - start)


def main():
  dense = jax.jit(lambda tr, y, s: jax.nn.softmax(
      -jnp.sum((y[:, None, :] - tr[None]) ** 2, -1) / (2 * s**2), axis=1) @ tr)
  print(f"{'N':>6} {'d':>4} {'Q':>5} {'chunked q/s':>12} {'dense q/s':>12} {'ratio':>6}")
  for n, d in ((1024, 2), (1024, 64), (8192, 64)):
    key = jax.random.PRNGKey(n + d)
    train = jax.random.normal(key, (n, d))
    y = jax.random.normal(jax.random.fold_in(key, 1), (1024, d))
    s = jnp.asarray(0.5)
    chunked = _rate(lambda: regimes._posterior(train, y, s, jnp.asarray(1.0), 256, 1024).denoiser, y.shape[0])
    full = _rate(lambda: dense(train, y, s), y.shape[0])
    print(f"{n:>6} {d:>4} {y.shape[0]:>5} {chunked:>12.0f} {full:>12.0f} {chunked / full:>6.2f}")


if __name__ == "__main__":
  main()

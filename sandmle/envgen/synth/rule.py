"""The hidden rule l = f(z): a function family over the latents, standardised on a
reference sample so that a task drawn at micro and at full scale obeys the same rule."""

from __future__ import annotations

import numpy as np

REF_ROWS = 4000


class HiddenRuleFn:
    """f: R^d -> R^m of a family, standardised on a reference sample of latents."""

    def __init__(self, family: str, d: int, m: int, rng: np.random.Generator):
        self.family, self.d, self.m = family, d, m
        self.W = self._sparse(rng, d, m)
        self.W2 = self._sparse(rng, d, m)
        self.pairs = rng.integers(0, d, size=(m, 3, 2))
        self.pair_w = rng.normal(0, 1, size=(m, 3))
        self.trees = [(rng.integers(0, d, 2), rng.normal(0, 0.8, 2), rng.normal(0, 1, 4))
                      for _ in range(6 * m)]
        self.phase = rng.uniform(0, 2 * np.pi, m)
        self.protos = rng.normal(0, 1.1, size=(m, d))
        self.g_kind = rng.integers(0, 5, size=d)
        self.mu = np.zeros(m)
        self.sd = np.ones(m)
        ref = rng.normal(size=(REF_ROWS, d))
        raw = self._raw(ref)
        self.mu, self.sd = raw.mean(0), raw.std(0) + 1e-9

    @staticmethod
    def _sparse(rng, d, m):
        w = rng.normal(0, 1, size=(d, m))
        keep = rng.random((d, m)) < max(0.35, 3.0 / d)
        keep[rng.integers(0, d, m), np.arange(m)] = True
        return w * keep

    def _raw(self, z: np.ndarray) -> np.ndarray:
        f = self.family
        if f == "linear":
            return z @ self.W
        if f == "interaction":
            out = 0.5 * (z @ self.W)
            for k in range(self.m):
                for (a, b), w in zip(self.pairs[k], self.pair_w[k]):
                    out[:, k] += w * z[:, a] * z[:, b]
            return out
        if f == "threshold":
            out = np.zeros((len(z), self.m))
            for t, (dims, cuts, leaves) in enumerate(self.trees):
                left = (z[:, dims[0]] > cuts[0]).astype(int)
                right = (z[:, dims[1]] > cuts[1]).astype(int)
                out[:, t % self.m] += leaves[2 * left + right]
            return out
        if f == "periodic":
            return np.sin(1.3 * (z @ self.W) + self.phase) + 0.3 * (z @ self.W2)
        if f == "prototype":
            d2 = ((z[:, None, :] - self.protos[None]) ** 2).sum(-1)
            return -d2
        if f == "additive":
            g = np.stack([np.tanh(2 * z), z ** 2 - 1, np.abs(z) - 0.8, np.sin(2 * z),
                          np.maximum(z, 0) - 0.4], 0)
            gz = g[self.g_kind, :, np.arange(self.d)].T  # (n, d)
            return gz @ self.W
        raise ValueError(f"unknown rule family {f!r}")

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return (self._raw(z) - self.mu) / self.sd

"""Graphs rendered from latents: one graph whose rows are nodes.

Edges are homophilous (nodes with close latents link more often), node features show only
a noisy part of each node's latent vector, so a node's neighbours carry the information its
own features lack. The edge list is public (graph/edges.csv, rows shuffled); train and test
nodes live in the same graph (transductive node prediction).
"""

from __future__ import annotations

import io
from typing import Any, Mapping

import numpy as np
import pandas as pd

_CANDIDATES = 40


def render(shape: Mapping[str, Any], pitfalls: Mapping[str, float], z: np.ndarray,
           prng: np.random.Generator, rng: np.random.Generator, ids: list[str] | None = None,
           domain: Any = None) -> tuple[pd.DataFrame, dict[str, bytes], dict[str, Any]]:
    """Renders node features (f_*) and graph/edges.csv (source,target by node id)."""
    n, d = z.shape
    k_feat = int(shape.get("node_features", 8))
    degree = float(shape.get("avg_degree", 5))
    hidden = prng.choice(d, size=max(1, d // 3), replace=False)
    visible = np.ones(d)
    visible[hidden] = 0.0
    mix = prng.normal(0, 1, (d, max(k_feat, 1))) * visible[:, None]
    mix[:, :min(d, k_feat)] += np.eye(d, min(d, k_feat)) * visible[:, None] * 2
    feats = z @ mix / np.sqrt(d) + 0.8 * rng.normal(size=(n, max(k_feat, 1)))
    # Homophilous edges: each node picks partners among random candidates, nearer preferred.
    m_edges = max(1, int(round(n * degree / 2)))
    src = rng.integers(0, n, m_edges)
    cand = rng.integers(0, n, (m_edges, _CANDIDATES))
    d2 = ((z[src][:, None, :] - z[cand]) ** 2).sum(-1)
    logits = -d2 / 1.5
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    pick = (p.cumsum(1) > rng.random((m_edges, 1))).argmax(1)
    dst = cand[np.arange(m_edges), pick]
    sev = pitfalls.get("distractor_features", 0.0)
    if sev:  # random edges that ignore the latents
        extra = int(sev * 0.5 * m_edges)
        src = np.concatenate([src, rng.integers(0, n, extra)])
        dst = np.concatenate([dst, rng.integers(0, n, extra)])
    keep = src != dst
    a, b = np.minimum(src[keep], dst[keep]), np.maximum(src[keep], dst[keep])
    pairs = np.unique(np.stack([a, b], 1), axis=0)
    pairs = pairs[rng.permutation(len(pairs))]
    flip = rng.random(len(pairs)) < 0.5
    pairs[flip] = pairs[flip][:, ::-1]
    ids_arr = np.array(ids, dtype=object)
    edges = pd.DataFrame({"source": ids_arr[pairs[:, 0]], "target": ids_arr[pairs[:, 1]]})
    buf = io.StringIO()
    edges.to_csv(buf, index=False, lineterminator="\n")
    if domain is not None:  # the domain's node attributes, laid out in their own units
        from sandmle.envgen import domains
        from sandmle.envgen.synth.tabular import realise
        from sandmle.envgen.synth.tabular import coarse
        named = sorted(domains.numeric_features(domain, k_feat), key=lambda f: coarse(f.kind))
        frame = pd.DataFrame({f.name: realise(f.kind, feats[:, i] / (feats[:, i].std() + 1e-9))
                              for i, f in enumerate(named)})
        columns = {f.name: f.meaning for f in named}
    else:
        frame = pd.DataFrame(np.round(feats[:, :k_feat], 4),
                             columns=[f"f_{i:02d}" for i in range(k_feat)])
        columns = {c: "node attribute" for c in frame.columns}
    sev_mv = pitfalls.get("missing_values", 0.0)
    if sev_mv and k_feat:
        values = frame.to_numpy(copy=True)
        values[rng.random(values.shape) < 0.2 * sev_mv] = np.nan
        frame = pd.DataFrame(values, columns=frame.columns)
    edge = domain.edge if domain is not None and domain.edge else "link"
    notes = {"media": {"graph/edges.csv": f"undirected edge list with columns `source` and "
                       f"`target` (node ids, the `id` values of train.csv and test.csv), "
                       f"{len(edges)} edges over {n} nodes; an edge is a {edge}; train and "
                       "test nodes share one graph"},
             "columns": columns}
    return frame, {"graph/edges.csv": buf.getvalue().encode()}, notes

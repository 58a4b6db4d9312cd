"""Runtime of the reference solutions: featurisers, model drivers, submission writer.

This file's source is copied verbatim into every reference solution script (see
solutions.py), followed by a CFG dict and `main(CFG)`, so each script stands alone: it runs
with cwd = a job workdir, reads ./input/ (train.csv, test.csv, media) and writes
./submission.csv in the sample submission's format. It needs only numpy, pandas, scipy, scikit-learn and Pillow.
"""

import os

# One thread per job: the farm runs many jobs side by side (set before numpy loads).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
import warnings

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")
INPUT = "input"


# ---------------------------------------------------------------------------------------
# featurisers: (train_df, test_df, cfg) -> (X_train, X_test), dense or scipy sparse
# ---------------------------------------------------------------------------------------
# Columns holding paths of per-row media files (images/<id>.png, texts/<id>.txt, ...).
MEDIA_COLUMNS = ("image", "audio", "text_file", "series_file")


def _input_columns(cfg, df):
    skip = {cfg["id"], "class"} | set(cfg["train_targets"]) | set(MEDIA_COLUMNS)
    return [c for c in df.columns if c not in skip]


def feat_tabular(tr, te, cfg, level="main"):
    cols = [c for c in _input_columns(cfg, tr) if c != "text" and not c.startswith("t_")]
    both = pd.concat([tr[cols], te[cols]], axis=0, ignore_index=True)
    num = [c for c in cols if pd.api.types.is_numeric_dtype(both[c])]
    cat = [c for c in cols if c not in num]
    if level == "weak":
        x = both[num[:3]].fillna(0).to_numpy(float) if num else np.zeros((len(both), 1))
        return x[:len(tr)], x[len(tr):]
    parts = []
    if num:
        xn = both[num].astype(float)
        parts.append(xn.fillna(xn.median()).fillna(0).to_numpy())
        if level == "main":
            parts.append(xn.isna().to_numpy(float))
    if level == "main":
        for c in cat:
            s = both[c].astype(object).fillna("__missing__").astype(str)
            levels = s.value_counts()
            if len(levels) <= 12:
                parts.append(pd.get_dummies(s).to_numpy(float))
            else:  # frequency + train-target-free ordinal code for many levels
                parts.append(s.map(levels).to_numpy(float)[:, None] / len(s))
                parts.append(pd.factorize(s, sort=True)[0][:, None].astype(float))
    x = np.hstack(parts) if parts else np.zeros((len(both), 1))
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return x[:len(tr)], x[len(tr):]


def _texts(df):
    """The text of each row: the `text` column, or the files named in `text_file`."""
    if "text" in df.columns:
        return df["text"].fillna("").astype(str)
    out = []
    for rel in df["text_file"]:
        with open(os.path.join(INPUT, rel), encoding="utf-8") as f:
            out.append(f.read().strip())
    return pd.Series(out, index=df.index)


def feat_text(tr, te, cfg, level="main"):
    a, b = _texts(tr), _texts(te)
    if level == "weak":
        f = lambda s: np.c_[s.str.len(), s.str.count(" "), s.str.count("!")].astype(float)
        return f(a), f(b)
    from sklearn.feature_extraction.text import TfidfVectorizer
    if level == "main":
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1,
                              max_features=20000)
    else:
        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True,
                              max_features=20000)
    return vec.fit_transform(a), vec.transform(b)


def _load_images(ids):
    from PIL import Image
    return np.stack([np.asarray(Image.open(os.path.join(INPUT, "images", f"{i}.png")),
                                dtype=np.float32) / 255.0 for i in ids])


def image_features(imgs, level):
    if imgs.ndim == 3:
        imgs = imgs[..., None]
    n, h, w, c = imgs.shape
    if level == "weak":
        return imgs.mean((1, 2))
    if level == "alt":
        step = max(1, h // 12)
        return imgs[:, ::step, ::step, :].reshape(n, -1)
    feats = [imgs.mean((1, 2)), imgs.std((1, 2))]
    for ch in range(c):  # colour histograms
        hist = np.stack([np.histogram(im[..., ch], bins=8, range=(0, 1))[0] for im in imgs])
        feats.append(hist / (h * w))
    gray = imgs.mean(-1)
    gy, gx = np.gradient(gray, axis=(1, 2))
    mag, ang = np.hypot(gx, gy), np.mod(np.arctan2(gy, gx), np.pi)
    ori = np.stack([np.histogram(a, bins=8, range=(0, np.pi), weights=m)[0]
                    for a, m in zip(ang, mag)])
    feats.append(ori / (mag.sum((1, 2))[:, None] + 1e-6))
    feats.append(mag.mean((1, 2))[:, None])
    spec = np.abs(np.fft.fftshift(np.fft.fft2(gray - gray.mean((1, 2), keepdims=True)),
                                  axes=(1, 2)))
    yy, xx = np.mgrid[0:h, 0:w]
    rad = np.hypot(yy - h / 2, xx - w / 2)
    rings = [spec[:, (rad >= r0) & (rad < r0 + 2)].mean(1) for r0 in range(0, h // 2, 2)]
    feats.append(np.log1p(np.stack(rings, 1)))
    centre = imgs[:, h // 4:3 * h // 4, w // 4:3 * w // 4].mean((1, 2))
    feats.append(centre - imgs.mean((1, 2)))
    dark = (gray < np.median(gray, axis=(1, 2), keepdims=True))
    feats.append(dark.mean((1, 2))[:, None])
    return np.hstack(feats)


def feat_image(tr, te, cfg, level="main"):
    return (image_features(_load_images(tr[cfg["id"]]), level),
            image_features(_load_images(te[cfg["id"]]), level))


def audio_features(ids, level):
    from scipy.io import wavfile
    from scipy.signal import spectrogram
    rows = []
    for i in ids:
        sr, x = wavfile.read(os.path.join(INPUT, "audio", f"{i}.wav"))
        x = x.astype(np.float32) / 32768.0
        if level == "weak":
            rows.append([np.sqrt((x ** 2).mean()), (np.diff(np.sign(x)) != 0).mean(),
                         np.abs(x).max()])
            continue
        if level == "alt":
            mag = np.abs(np.fft.rfft(x))
            rows.append(np.log1p(np.array([b.mean() for b in np.array_split(mag, 64)])))
            continue
        f, t, s = spectrogram(x, fs=sr, nperseg=128, noverlap=64)
        s = np.log1p(s * 1e4)
        bands = np.array_split(s, 32, axis=0)
        prof = np.array([b.mean(0) for b in bands])  # (32, T)
        rows.append(np.concatenate([prof.mean(1), prof.max(1), prof.std(1),
                                    [np.argmax(p) / len(p) for p in prof]]))
    return np.array(rows, dtype=float)


def feat_audio(tr, te, cfg, level="main"):
    return audio_features(tr[cfg["id"]], level), audio_features(te[cfg["id"]], level)


def feat_graph(tr, te, cfg, level="main"):
    import scipy.sparse as sp
    idc = cfg["id"]
    cols = [c for c in _input_columns(cfg, tr)]
    both = pd.concat([tr[[idc] + cols], te[[idc] + cols]], axis=0, ignore_index=True)
    index = {k: i for i, k in enumerate(both[idc])}
    edges = pd.read_csv(os.path.join(INPUT, "graph", "edges.csv"), dtype=str)
    a = edges.source.map(index).to_numpy()
    b = edges.target.map(index).to_numpy()
    n = len(both)
    adj = sp.coo_matrix((np.ones(2 * len(a)), (np.r_[a, b], np.r_[b, a])), shape=(n, n)).tocsr()
    deg = np.asarray(adj.sum(1)).ravel()
    x = both[cols].astype(float)
    x = x.fillna(x.mean()).fillna(0).to_numpy() if cols else np.zeros((n, 1))
    if level == "weak":
        out = deg[:, None]
    else:
        norm = sp.diags(1.0 / np.maximum(deg, 1)) @ adj
        h1 = norm @ x
        out = np.hstack([x, h1, deg[:, None]])
        if level == "main":
            out = np.hstack([out, norm @ h1])
    return out[:len(tr)], out[len(tr):]


def series_matrix(df, prefix="t_"):
    """(rows, steps): the t_* columns, or the series files named in `series_file`."""
    if "series_file" in df.columns:
        rows = []
        for rel in df["series_file"]:  # step,value per line; a blank value is missing
            with open(os.path.join(INPUT, rel)) as f:
                lines = f.read().split()[1:]
            rows.append([float(v) if v else np.nan for v in (ln.split(",")[1] for ln in lines)])
        x = pd.DataFrame(np.array(rows, dtype=float))
    else:
        x = df[[c for c in df.columns if c.startswith(prefix)]].astype(float)
    return x.interpolate(axis=1, limit_direction="both").fillna(0).to_numpy()


def series_features(df, prefix, level):
    x = series_matrix(df, prefix)
    if level == "weak":
        return np.c_[x[:, -1], x.mean(1)]
    if level == "alt":
        return x
    t = np.arange(x.shape[1])
    slope = np.polyfit(t, x.T, 1)[0]
    spec = np.abs(np.fft.rfft(x - x.mean(1, keepdims=True), axis=1))
    return np.c_[x, x.mean(1), x.std(1), slope, x[:, -4:], np.log1p(spec)]


def feat_timeseries(tr, te, cfg, level="main"):
    return series_features(tr, "t_", level), series_features(te, "t_", level)


FEATURIZERS = {"tabular": feat_tabular, "text": feat_text, "image": feat_image,
               "audio": feat_audio, "graph": feat_graph, "timeseries": feat_timeseries}


def featurize(tr, te, cfg, level):
    import scipy.sparse as sp
    parts = cfg["parts"]
    if level == "single":  # multimodal: one part only
        parts, level = parts[:1], "main"
    xs = [FEATURIZERS[p](tr, te, cfg, level) for p in parts]
    if len(xs) == 1:
        return xs[0]
    if any(sp.issparse(a) for a, _ in xs):
        return (sp.hstack([sp.csr_matrix(a) for a, _ in xs]).tocsr(),
                sp.hstack([sp.csr_matrix(b) for _, b in xs]).tocsr())
    return np.hstack([a for a, _ in xs]), np.hstack([b for _, b in xs])


def dense(xtr, xte, limit=100):
    """Dense matrices for models that need them (SVD for wide sparse input)."""
    import scipy.sparse as sp
    if not sp.issparse(xtr):
        return xtr, xte
    if xtr.shape[1] <= 300:
        return xtr.toarray(), xte.toarray()
    from sklearn.decomposition import TruncatedSVD
    svd = TruncatedSVD(min(limit, xtr.shape[0] - 1, xtr.shape[1] - 1), random_state=0)
    return svd.fit_transform(xtr), svd.transform(xte)


# ---------------------------------------------------------------------------------------
# models and drivers
# ---------------------------------------------------------------------------------------
def build(expr):
    """Evaluates a model expression against scikit-learn's namespace."""
    import sklearn.discriminant_analysis as da
    import sklearn.ensemble as en
    import sklearn.linear_model as lm
    import sklearn.naive_bayes as nb
    import sklearn.neighbors as nn
    import sklearn.neural_network as nnet
    import sklearn.pipeline as pl
    import sklearn.preprocessing as pp
    import sklearn.svm as svm
    import sklearn.tree as tree
    import sklearn.calibration as cal
    ns = {}
    for mod in (da, en, lm, nb, nn, nnet, pl, pp, svm, tree, cal):
        ns.update({k: getattr(mod, k) for k in dir(mod) if not k.startswith("_")})
    return eval(expr, ns)


def _scaled(expr):
    return f"make_pipeline(StandardScaler(with_mean=False), {expr})"


def class_probs(expr, needs_dense, xtr, y, xte, labels):
    """P(test) over `labels` (columns in labels order)."""
    if needs_dense:
        xtr, xte = dense(xtr, xte)
    y = np.asarray(y)
    out = np.zeros((xte.shape[0], len(labels)))
    present = sorted(set(y.tolist()), key=lambda v: labels.index(v))
    if len(present) == 1:
        out[:, labels.index(present[0])] = 1.0
        return out
    model = build(expr)
    model.fit(xtr, y)
    p = model.predict_proba(xte)
    for j, c in enumerate(model.classes_):
        out[:, labels.index(c.item() if hasattr(c, "item") else c)] = p[:, j]
    return out


def values(expr, needs_dense, xtr, y, xte):
    if needs_dense:
        xtr, xte = dense(xtr, xte)
    model = build(expr)
    model.fit(xtr, y)
    return np.asarray(model.predict(xte), dtype=float)


def _multi_output(expr):
    from sklearn.utils import get_tags
    try:
        return bool(get_tags(build(expr)).target_tags.multi_output)
    except Exception:  # an estimator without tags: fit targets one by one
        return False


def _clip_probs(p, eps=1e-3):
    p = np.clip(p, eps, 1.0)
    return p / p.sum(1, keepdims=True)


def id_keys(ids):
    """A number per id (hex ids read as numbers, else their last digits), for the
    nearest-id shortcut: it scores well only when ids carry order."""
    import re
    out = []
    for s in map(str, ids):
        try:
            out.append(float(int(s, 16)))
        except ValueError:
            digits = re.findall(r"\d+", s)
            out.append(float(digits[-1]) if digits else float(sum(map(ord, s))))
    return np.array(out)


def nearest_id(tr, te, cfg):
    """Index into train of the row whose id is nearest each test id."""
    a, b = id_keys(tr[cfg["id"]]), id_keys(te[cfg["id"]])
    order = np.argsort(a, kind="stable")
    pos = np.clip(np.searchsorted(a[order], b), 1, len(a) - 1)
    left, right = order[pos - 1], order[pos]
    return np.where(np.abs(b - a[left]) <= np.abs(a[right] - b), left, right)


def predict(cfg, tr, te):
    """The prediction in canonical form: class probabilities or target values."""
    sol, ls, labels = cfg["solution"], cfg["label_structure"], cfg["labels"]
    kind, rng = sol["kind"], np.random.default_rng(0)
    targets = cfg["train_targets"]
    n = len(te)
    if kind == "id_nn":
        near = nearest_id(tr, te, cfg)
        if ls in ("binary", "multiclass", "ordinal"):
            y = tr[targets[0]].tolist()
            return np.eye(len(labels))[[labels.index(y[i]) for i in near]]
        return tr[targets].to_numpy(float)[near]
    if ls in ("binary", "multiclass", "ordinal"):
        y = tr[targets[0]].tolist()
        prior = np.array([y.count(c) for c in labels], float) / len(y)
        if kind == "prior":
            return np.tile(prior, (n, 1))
        if kind == "random":
            return rng.dirichlet(np.ones(len(labels)), n)
        if kind == "majority":
            return np.tile(np.eye(len(labels))[int(np.argmax(prior))], (n, 1))
        xtr, xte = featurize(tr, te, cfg, sol["features"])
        if kind == "ordinal_regression":
            v = values(sol["model"], sol["dense"], xtr, np.array(y, float), xte)
            idx = np.clip(np.round(v), 0, len(labels) - 1).astype(int)
            return np.eye(len(labels))[idx]
        p = class_probs(sol["model"], sol["dense"], xtr, y, xte, labels)
        if cfg["metric"] == "log_loss":  # shrink towards the prior: one overconfident
            p = 0.75 * p + 0.25 * prior    # miss costs more than many small gains
        return p
    if ls == "multilabel":
        y = tr[targets].to_numpy()
        if kind == "prior":
            return np.tile(y.mean(0), (n, 1))
        if kind == "random":
            return rng.random((n, len(targets)))
        if kind == "majority":
            return np.tile((y.mean(0) > 0.5).astype(float), (n, 1))
        xtr, xte = featurize(tr, te, cfg, sol["features"])
        return np.stack([class_probs(sol["model"], sol["dense"], xtr, y[:, j], xte,
                                     [0, 1])[:, 1] for j in range(y.shape[1])], 1)
    # values: regression, multitarget, forecasting
    y = tr[targets].to_numpy(float)
    log = cfg["metric"] in ("rmsle", "mean_columnwise_rmsle")
    if kind == "mean":
        return np.tile(y.mean(0), (n, 1))
    if kind == "median":
        return np.tile(np.median(y, 0), (n, 1))
    if kind == "random":
        return y[rng.integers(0, len(y), n)]
    if kind in ("last_value", "history_mean", "drift"):
        hist = series_features(te, "t_", "alt")
        if kind == "last_value":
            return np.tile(hist[:, -1:], (1, len(targets)))
        if kind == "history_mean":
            return np.tile(hist.mean(1, keepdims=True), (1, len(targets)))
        slope = (hist[:, -1] - hist[:, 0]) / max(hist.shape[1] - 1, 1)
        return hist[:, -1:] + slope[:, None] * np.arange(1, len(targets) + 1)[None, :]
    xtr, xte = featurize(tr, te, cfg, sol["features"])
    yt = np.log1p(np.clip(y, 0, None)) if log else y
    if yt.shape[1] > 1 and _multi_output(sol["model"]):  # one fit for all targets
        out = values(sol["model"], sol["dense"], xtr, yt, xte).reshape(len(te), -1)
    else:
        out = np.stack([values(sol["model"], sol["dense"], xtr, yt[:, j], xte)
                        for j in range(y.shape[1])], 1)
    return np.clip(np.expm1(out), 0, None) if log else out


# ---------------------------------------------------------------------------------------
# submission writer
# ---------------------------------------------------------------------------------------
def write_submission(cfg, te, pred):
    idc, kind, labels = cfg["id"], cfg["kind"], cfg["labels"]
    out = pd.DataFrame({idc: te[idc].astype(str).to_numpy()})
    cols = cfg["answer_columns"]
    if kind == "ranking":
        k = int(cfg["metric_kwargs"]["k"])
        order = np.argsort(-pred, axis=1, kind="stable")[:, :k]
        out[cols[0]] = [" ".join(labels[j] for j in row) for row in order]
    elif cfg["label_structure"] == "multilabel":
        for j, c in enumerate(cols):
            out[c] = np.round(np.clip(pred[:, j], 0, 1), 6) if kind == "probability" \
                else (pred[:, j] > 0.5).astype(int)
    elif kind == "probability" and cfg["label_structure"] == "binary":
        out[cols[0]] = np.round(np.clip(pred[:, 1], 1e-4, 1 - 1e-4), 6)
    elif kind == "probability":
        p = _clip_probs(pred)
        for j, c in enumerate(cols):
            out[c] = p[:, j]
    elif kind == "label":
        out[cols[0]] = [labels[j] for j in np.argmax(pred, 1)]
    else:
        for j, c in enumerate(cols):
            out[c] = np.round(pred[:, j], 5)
    out.to_csv("submission.csv", index=False)


def main(cfg):
    tr = pd.read_csv(os.path.join(INPUT, "train.csv"), dtype={cfg["id"]: str})
    te = pd.read_csv(os.path.join(INPUT, "test.csv"), dtype={cfg["id"]: str})
    if cfg["label_structure"] in ("binary", "ordinal"):
        cfg["labels"] = [int(v) for v in cfg["labels"]]
    pred = predict(cfg, tr, te)
    write_submission(cfg, te, pred)
    print(f"wrote submission.csv with {len(te)} rows")

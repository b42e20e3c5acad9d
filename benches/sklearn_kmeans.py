#!/usr/bin/env python3
"""The reference for `segment`'s performance target: scikit-learn's KMeans (k=6, n_init=10,
k-means++) on the very feature vectors viewpulse wrote (MODEL_DIR/features.csv), timed around
the fit alone, with the inertia of the best run. Compare with viewpulse's model.json
(`inertia`) and its KMeans time (`segment` logs it; model.json holds no timing).

    python3 benches/sklearn_kmeans.py MODEL_DIR [--threads 2]
"""
import argparse
import json
import os
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("model_dir")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--k", type=int, default=6)
ap.add_argument("--seed", type=int, default=3)
args = ap.parse_args()
os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

import numpy as np  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402

t0 = time.perf_counter()
x = np.loadtxt(os.path.join(args.model_dir, "features.csv"), delimiter=",", skiprows=1)[:, 1:]
load = time.perf_counter() - t0
t0 = time.perf_counter()
km = KMeans(n_clusters=args.k, n_init=10, init="k-means++", random_state=args.seed).fit(x)
fit = time.perf_counter() - t0
ours = json.load(open(os.path.join(args.model_dir, "model.json")))
print(json.dumps({
    "households": int(x.shape[0]),
    "dims": int(x.shape[1]),
    "sklearn_fit_s": round(fit, 3),
    "sklearn_inertia": float(km.inertia_),
    "sklearn_iterations": int(km.n_iter_),
    "viewpulse_inertia": ours["inertia"],
    "inertia_ratio": ours["inertia"] / float(km.inertia_),
    "load_s": round(load, 3),
}, indent=1))

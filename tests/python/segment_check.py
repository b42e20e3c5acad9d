#!/usr/bin/env python3
"""Independent checks of `segment`'s model folder, called by tests/segments.rs.

    segment_check.py scores RANGE_DIR K=DIR [K=DIR ...]
        every row of RANGE_DIR/k_selection.csv against scikit-learn's silhouette_score (on
        every household: the test's data set is under the 20,000-household sample),
        calinski_harabasz_score and davies_bouldin_score on the labels of the model DIR that
        `segment --k K` wrote, and its inertia; to 1e-9
    segment_check.py profiles DIR DEMOGRAPHICS_CSV
        DIR/profiles.csv against a pandas groupby over the demographics and households.csv;
        to 1e-12
    segment_check.py kmeans DIR
        DIR's inertia against scikit-learn's KMeans(k, n_init=10) on DIR/features.csv: no
        worse on the test's data set (the README's table shows where it can be: one fit of 21)

Prints what it compared; exits 1 on the first disagreement.
"""
import json
import os
import sys

for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(var, None)
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

NUMERIC = ["household_size", "num_adults", "num_generations", "length_residence",
           "home_market_value", "net_worth", "education_highest"]
CATEGORICAL = ["marital_status", "race_code", "dwelling_type", "home_owner_status",
               "gender_individual"]


def fail(msg):
    print("MISMATCH: " + msg)
    sys.exit(1)


def labelled(d):
    """features (by household_id) and cluster labels of a model folder."""
    f = pd.read_csv(os.path.join(d, "features.csv")).sort_values("household_id")
    h = pd.read_csv(os.path.join(d, "households.csv")).set_index("household_id")
    labels = h.loc[f["household_id"], "cluster"].to_numpy()
    return f.iloc[:, 1:].to_numpy(), labels, h


def scores(range_dir, models):
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
    table = pd.read_csv(os.path.join(range_dir, "k_selection.csv"))
    checked = 0
    for spec in models:
        k, d = spec.split("=", 1)
        k = int(k)
        x, labels, h = labelled(d)
        row = table[table["k"] == k]
        if len(row) != 1:
            fail(f"k={k} is not one row of k_selection.csv")
        row = row.iloc[0]
        want = {
            "inertia": float(h["distance"].sum()),
            "silhouette": float(silhouette_score(x, labels)),
            "calinski_harabasz": float(calinski_harabasz_score(x, labels)),
            "davies_bouldin": float(davies_bouldin_score(x, labels)),
        }
        for col, v in want.items():
            tol = 1e-9 * max(1.0, abs(v)) if col in ("inertia", "calinski_harabasz") else 1e-9
            if abs(float(row[col]) - v) > tol:
                fail(f"k={k} {col}: viewpulse {row[col]!r}, scikit-learn {v!r}")
        print(f"k={k}: " + ", ".join(f"{c} {v:.12g}" for c, v in want.items()))
        checked += 1
    print(f"{checked} ks agree with scikit-learn to 1e-9")


def profiles(d, demographics):
    dem = pd.read_csv(demographics, dtype={c: str for c in CATEGORICAL})
    h = pd.read_csv(os.path.join(d, "households.csv"))
    m = dem.merge(h[["household_id", "cluster"]], on="household_id")
    got = pd.read_csv(os.path.join(d, "profiles.csv"), dtype={"value": str},
                      keep_default_na=False)
    n = 0

    def same(a, b, what):
        nonlocal n
        if abs(float(a) - float(b)) > 1e-12 * max(1.0, abs(float(b))):
            fail(f"{what}: viewpulse {a!r}, pandas {b!r}")
        n += 1

    for c, g in m.groupby("cluster"):
        rows = got[got["cluster"] == c]
        same(rows["households"].iloc[0], len(g), f"cluster {c} households")
        same(rows["share"].iloc[0], len(g) / len(m), f"cluster {c} share")
        for col in NUMERIC:
            for stat in ("mean", "median"):
                r = rows[(rows["column"] == col) & (rows["statistic"] == stat)].iloc[0]
                same(r["cluster_value"], getattr(g[col].astype(float), stat)(), f"cluster {c} {col} {stat}")
                same(r["population_value"], getattr(m[col].astype(float), stat)(), f"population {col} {stat}")
        for col in CATEGORICAL:
            shares = g[col].value_counts(normalize=True)
            pop = m[col].value_counts(normalize=True)
            cats = rows[rows["column"] == col]
            if sorted(cats["value"]) != sorted(pop.index):
                fail(f"cluster {c} {col}: categories {sorted(cats['value'])} vs {sorted(pop.index)}")
            for _, r in cats.iterrows():
                s = shares.get(r["value"], 0.0)
                same(r["cluster_value"], s, f"cluster {c} {col}={r['value']} share")
                same(r["population_value"], pop[r["value"]], f"population {col}={r['value']}")
                same(r["ratio"], s / pop[r["value"]], f"cluster {c} {col}={r['value']} lift")
    print(f"{n} profile values agree with pandas to 1e-12")


def kmeans(d):
    from sklearn.cluster import KMeans
    x, _, h = labelled(d)
    info = json.load(open(os.path.join(d, "model.json")))
    km = KMeans(n_clusters=info["k"], n_init=10, random_state=info["seed"]).fit(x)
    ratio = info["inertia"] / km.inertia_
    print(f"viewpulse inertia {info['inertia']!r}, scikit-learn {km.inertia_!r}, ratio {ratio:.9f}")
    if ratio > 1 + 1e-9:
        fail(f"inertia ratio {ratio} above 1")


cmd = sys.argv[1]
if cmd == "scores":
    scores(sys.argv[2], sys.argv[3:])
elif cmd == "profiles":
    profiles(sys.argv[2], sys.argv[3])
elif cmd == "kmeans":
    kmeans(sys.argv[2])
else:
    fail(f"unknown command {cmd}")

#!/usr/bin/env python3
"""Independent checks of `analyze`'s intervals and agreement, called by tests/intervals.rs.

    intervals_check.py bootstrap VIEWS MODEL_DIR OUT_DIR CONFIDENCE TOP
        OUT_DIR/diff_rank.csv's popularity_lo/hi, diff_rank_lo/hi and top_k_share and
        OUT_DIR/popularity.csv's popularity_lo/hi, recomputed with numpy from the views
        themselves, households.csv and the resample plan OUT_DIR/resamples.csv: every view
        weighted by how many times its household's group was drawn; to 1e-9
    intervals_check.py analytic VIEWS MODEL_DIR OUT_DIR CONFIDENCE
        the same columns from the delta method over the household groups; to 1e-9
    intervals_check.py agreement OUT_DIR TOP
        OUT_DIR/agreement.csv's overlap, Kendall's tau and Spearman's rho against
        scipy.stats.kendalltau and spearmanr, over whole rankings rebuilt from popularity.csv
        and genpop.csv with exact integer keys; to 1e-12

A household's group is the high half of SplitMix64's finaliser of its id, modulo 128
(counters::household_group), written out again here. Prints what it compared; exits 1 on the
first disagreement.
"""
import csv
import sys
from collections import defaultdict

import numpy as np
from scipy import stats

GROUPS = 128
M64 = (1 << 64) - 1


def fail(msg):
    print("MISMATCH: " + msg)
    sys.exit(1)


def group(h):
    z = ((h & M64) + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    z ^= z >> 31
    return (z >> 32) % GROUPS


def valid_views(path):
    """(household_id, station_num) of every valid record (SPEC 1.2)."""
    out = []
    with open(path, "rb") as f:
        for raw in f:
            line = raw.rstrip(b"\n")
            if line.endswith(b"\r"):
                line = line[:-1]
            try:
                text = line.decode("ascii")
            except UnicodeDecodeError:
                continue
            fields = text.split(",")
            if len(fields) != 6 or any(x == "" for x in fields):
                continue
            try:
                h = int(fields[5])
            except ValueError:
                continue
            if not -(1 << 63) <= h < (1 << 63):
                continue
            out.append((h, fields[3]))
    return out


def households(model):
    out = {}
    with open(f"{model}/households.csv") as f:
        for r in csv.DictReader(f):
            h = int(r["household_id"])
            if h not in out:
                out[h] = (int(r["cluster"]), int(r["rank"]))
    return out


def in_subset(label, rank):
    return label == "all" or rank % int(label) == 0


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def close(a, b, what):
    if abs(a - b) > 1e-9 * max(1.0, abs(b)):
        fail(f"{what}: viewpulse {a!r}, numpy {b!r}")


def group_counts(views, hh, out):
    """Per (subset, cluster): station list and G x stations counts; the genpop's too."""
    diff = read(f"{out}/diff_rank.csv")
    pop = read(f"{out}/popularity.csv")
    labels = sorted({r["subset"] for r in pop})
    stations = sorted({s for _, s in views})
    sidx = {s: i for i, s in enumerate(stations)}
    gen = np.zeros((GROUPS, len(stations)))
    x = {}
    for h, s in views:
        g = group(h)
        gen[g, sidx[s]] += 1
        member = hh.get(h)
        if member is None:
            continue
        cl, rank = member
        for label in labels:
            if in_subset(label, rank):
                key = (label, cl)
                if key not in x:
                    x[key] = np.zeros((GROUPS, len(stations)))
                x[key][g, sidx[s]] += 1
    return diff, pop, stations, sidx, gen, x


def bootstrap(views_path, model, out, confidence, top):
    views = valid_views(views_path)
    hh = households(model)
    diff, pop, stations, sidx, gen, x = group_counts(views, hh, out)
    plan = read(f"{out}/resamples.csv")
    b_count = max(int(r["resample"]) for r in plan) + 1
    w = np.zeros((b_count, GROUPS))
    for r in plan:
        w[int(r["resample"]), int(r["group"])] = float(r["draws"])
    if not np.all(w.sum(axis=1) == GROUPS):
        fail("a resample does not draw G of G groups")
    gen_b = 100.0 * (w @ gen) / (w @ gen.sum(axis=1))[:, None]
    lo_q, hi_q = (1 - confidence) / 2, (1 + confidence) / 2
    want = {}
    for (label, cl), xc in x.items():
        xb = w @ xc
        tb = xb.sum(axis=1)
        ok = tb > 0
        estimable = (xc.sum(axis=1) > 0).sum() >= 2 and ok.any()
        popb = 100.0 * xb[ok] / tb[ok][:, None]
        diffb = popb - gen_b[ok]
        in_top = np.zeros(len(stations))
        names = np.array(stations)
        for b in range(b_count):
            if tb[b] <= 0:
                continue
            d = 100.0 * xb[b] / tb[b] - gen_b[b]
            ranked = [j for j in range(len(stations)) if xb[b, j] >= 1]
            ranked.sort(key=lambda j: (-d[j], names[j].encode()))
            for j in ranked[:top]:
                in_top[j] += 1
        watched = xc.sum(axis=0) > 0
        for j in np.nonzero(watched)[0]:
            want[(label, cl, stations[j])] = (
                np.quantile(popb[:, j], [lo_q, hi_q]),
                np.quantile(diffb[:, j], [lo_q, hi_q]),
                in_top[j] / ok.sum(),
            ) if estimable else None
    compare(pop, diff, want, with_share=True)
    print(f"bootstrap: {len(pop)} popularity rows and {len(diff)} diff-rank rows, "
          f"{b_count} resamples, agree to 1e-9")


def analytic(views_path, model, out, confidence):
    views = valid_views(views_path)
    hh = households(model)
    diff, pop, stations, sidx, gen, x = group_counts(views, hh, out)
    z = stats.norm.ppf((1 + confidence) / 2)
    n_g = gen.sum(axis=1)
    n = n_g.sum()
    q = gen.sum(axis=0) / n
    scale = GROUPS / (GROUPS - 1)
    want = {}
    for (label, cl), xc in x.items():
        t_g = xc.sum(axis=1)
        t = t_g.sum()
        p = xc.sum(axis=0) / t
        zp = (xc - np.outer(t_g, p)) / t
        zq = (gen - np.outer(n_g, q)) / n
        sp = 100 * np.sqrt(scale * (zp ** 2).sum(axis=0))
        sd = 100 * np.sqrt(scale * ((zp - zq) ** 2).sum(axis=0))
        estimable = (t_g > 0).sum() >= 2
        for j in np.nonzero(xc.sum(axis=0) > 0)[0]:
            pp, dd = 100 * p[j], 100 * (p[j] - q[j])
            want[(label, cl, stations[j])] = (
                (pp - z * sp[j], pp + z * sp[j]),
                (dd - z * sd[j], dd + z * sd[j]),
                None,
            ) if estimable else None
    compare(pop, diff, want, with_share=False)
    print(f"analytic: {len(pop)} popularity rows and {len(diff)} diff-rank rows agree to 1e-9")


def compare(pop, diff, want, with_share):
    columns = ("popularity_lo", "popularity_hi", "diff_rank_lo", "diff_rank_hi", "top_k_share")
    for r in pop + diff:
        key = (r["subset"], int(r["cluster"]), r["station_num"])
        if key not in want:
            fail(f"row {key} has no counterpart")
        if want[key] is None:
            # the pair's households all in one group: no interval
            if any(r.get(c, "") != "" for c in columns):
                fail(f"row {key}: an interval where none can be estimated")
    pop = [r for r in pop if want[(r["subset"], int(r["cluster"]), r["station_num"])]]
    diff = [r for r in diff if want[(r["subset"], int(r["cluster"]), r["station_num"])]]
    for r in pop:
        key = (r["subset"], int(r["cluster"]), r["station_num"])
        (plo, phi), _, _ = want[key]
        close(float(r["popularity_lo"]), plo, f"popularity_lo {key}")
        close(float(r["popularity_hi"]), phi, f"popularity_hi {key}")
    for r in diff:
        key = (r["subset"], int(r["cluster"]), r["station_num"])
        (plo, phi), (dlo, dhi), share = want[key]
        close(float(r["popularity_lo"]), plo, f"diff_rank.csv popularity_lo {key}")
        close(float(r["popularity_hi"]), phi, f"diff_rank.csv popularity_hi {key}")
        close(float(r["diff_rank_lo"]), dlo, f"diff_rank_lo {key}")
        close(float(r["diff_rank_hi"]), dhi, f"diff_rank_hi {key}")
        close(float(r["index"]),
              100 * float(r["popularity_rating"]) / float(r["genpop_rating"]), f"index {key}")
        if with_share:
            close(float(r["top_k_share"]), share, f"top_k_share {key}")
        elif r["top_k_share"] != "":
            fail(f"top_k_share {key} without a bootstrap")


def agreement(out, top):
    pop = read(f"{out}/popularity.csv")
    gen = {r["station_num"]: int(r["views"]) for r in read(f"{out}/genpop.csv")}
    n = sum(gen.values())
    views = defaultdict(dict)
    for r in pop:
        views[(r["subset"], int(r["cluster"]))][r["station_num"]] = int(r["views"])
    ranking = {}
    for key, v in views.items():
        t = sum(v.values())
        ranking[key] = sorted(v, key=lambda s: (-(v[s] * n - gen[s] * t), s.encode()))
    rows = read(f"{out}/agreement.csv")
    for r in rows:
        cl = int(r["cluster"])
        a, b = ranking[(r["subset_a"], cl)], ranking[(r["subset_b"], cl)]
        ov = len(set(a[:top]) & set(b[:top]))
        if int(r["overlap"]) != ov:
            fail(f"overlap of cluster {cl} {r['subset_a']}/{r['subset_b']}: {r['overlap']} vs {ov}")
        pb = {s: i + 1 for i, s in enumerate(b)}
        common = [(i + 1, pb[s]) for i, s in enumerate(a) if s in pb]
        if int(r["common_stations"]) != len(common):
            fail(f"common stations of cluster {cl}")
        if len(common) >= 2:
            xs, ys = zip(*common)
            tau = stats.kendalltau(xs, ys).statistic
            rho = stats.spearmanr(xs, ys).statistic
            for name, got, want in (("kendall_tau", r["kendall_tau"], tau),
                                    ("spearman_rho", r["spearman_rho"], rho)):
                if abs(float(got) - want) > 1e-12:
                    fail(f"{name} of cluster {cl} {r['subset_a']}/{r['subset_b']}: {got} vs {want}")
    print(f"agreement: {len(rows)} rows agree with scipy")


def main():
    mode = sys.argv[1]
    if mode == "bootstrap":
        bootstrap(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), int(sys.argv[6]))
    elif mode == "analytic":
        analytic(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
    elif mode == "agreement":
        agreement(sys.argv[2], int(sys.argv[3]))
    else:
        fail(f"unknown mode {mode}")


if __name__ == "__main__":
    main()

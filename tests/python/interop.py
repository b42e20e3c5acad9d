"""Independent writers and readers for the interop tests (tests/formats.rs): the files and
topics viewpulse must take as other tools hand them over, and the checks that its Parquet
outputs read back in pyarrow, Polars and pandas as its CSVs say. Each subcommand prints
what it did; a failed check exits non-zero with the reason.

    python interop.py demographics-datasets SRC.parquet OUT_DIR
    python interop.py demographics-csvs SRC.parquet OUT_DIR
    python interop.py views-parquet SRC.csv OUT.parquet SELECTED.csv
    python interop.py views-typed-parquet SRC.csv OUT.parquet VALID.csv
    python interop.py views-gzip-folder SRC.csv OUT_DIR PARTS
    python interop.py households-parquet SRC.csv OUT_DIR [--no-rank]
    python interop.py check-ratings OUT_DIR
    python interop.py check-households MODEL_DIR
    python interop.py produce BOOTSTRAP TOPIC SRC.csv CODEC
"""

import csv
import decimal
import gzip
import json
import math
import os
import sys

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

CODECS = ["snappy", "gzip", "zstd", "lz4", "brotli", "none"]
NUMERIC = ["household_size", "num_adults", "num_generations", "length_residence",
           "home_market_value", "net_worth"]


def fail(msg):
    print(f"interop check failed: {msg}", file=sys.stderr)
    sys.exit(1)


def spark_style(table, out, codec, parts):
    """A folder as Spark writes one: part files, a _SUCCESS marker, Hadoop's .crc files."""
    os.makedirs(out, exist_ok=True)
    n = table.num_rows
    step = math.ceil(n / parts)
    for i in range(parts):
        name = f"part-{i:05d}-4f1c-{codec}.{codec}.parquet"
        pq.write_table(table.slice(i * step, step), os.path.join(out, name),
                       compression=codec, row_group_size=97)
        with open(os.path.join(out, f".{name}.crc"), "wb") as f:
            f.write(b"crc\x00\x01")
    open(os.path.join(out, "_SUCCESS"), "w").close()
    with open(os.path.join(out, "._SUCCESS.crc"), "wb") as f:
        f.write(b"crc")


def demographics_datasets(src, out):
    t = pq.read_table(src)
    # one Spark-style folder per codec, three part files each
    for codec in CODECS:
        spark_style(t, os.path.join(out, f"spark-{codec}"), codec, 3)
    # Spark's and pandas' other column types for the same columns: int32 sizes, decimal net
    # worth, household_id as decimal(20,0), education as a string, dictionary categories,
    # nullable pandas integers; large strings as Polars and pyarrow's large_string write them
    cols = {}
    for name in t.column_names:
        c = t.column(name)
        if name in ("household_size", "num_adults", "num_generations"):
            c = c.cast(pa.int32())
        elif name == "net_worth":
            c = pa.chunked_array([pa.array([None if v is None else decimal.Decimal(v).quantize(decimal.Decimal("0.01"))
                                            for v in c.to_pylist()], pa.decimal128(18, 2))])
        elif name == "household_id":
            c = c.cast(pa.decimal128(20, 0))
        elif name == "education_highest":
            c = c.cast(pa.string())
        elif name in ("marital_status", "race_code"):
            c = c.cast(pa.string()).dictionary_encode()
        elif name in ("dwelling_type", "home_owner_status", "gender_individual"):
            c = c.cast(pa.large_string())
        cols[name] = c
    typed = pa.table(cols)
    os.makedirs(os.path.join(out, "types"), exist_ok=True)
    pq.write_table(typed, os.path.join(out, "types", "part-0.parquet"), compression="zstd")
    # Polars' writer (zstd by default, string views)
    import polars as pl
    os.makedirs(os.path.join(out, "polars"), exist_ok=True)
    pl.from_arrow(t).write_parquet(os.path.join(out, "polars", "demographics.parquet"))
    # pandas' writer, with nullable integers (Int64) for the numeric columns
    import pandas as pd
    df = t.to_pandas()
    for name in ("household_size", "num_adults"):
        df[name] = df[name].astype("Int64")
    os.makedirs(os.path.join(out, "pandas"), exist_ok=True)
    df.to_parquet(os.path.join(out, "pandas", "demographics.parquet"), engine="pyarrow",
                  compression="gzip", index=False)
    # Hive partitions: dwelling_type lives only in the folder names
    ds.write_dataset(t, os.path.join(out, "hive"), format="parquet",
                     partitioning=ds.partitioning(pa.schema([("dwelling_type", t.schema.field("dwelling_type").type)]),
                                                  flavor="hive"),
                     basename_template="part-{i}.parquet")
    print(json.dumps(sorted(os.listdir(out))))


def demographics_csvs(src, out):
    """The same table as CSV the ways users and Spark write it, with a category value that
    holds a quote, a comma and a line break, so that only a real CSV reader keeps the rows."""
    import pandas as pd
    t = pq.read_table(src)
    df = t.to_pandas()
    df.loc[df.index[::7], "marital_status"] = 'M, "or"\nS'
    df.loc[df.index[3], "race_code"] = "W\r\nX"
    os.makedirs(out, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), os.path.join(out, "reference.parquet"))
    df.to_csv(os.path.join(out, "pandas.csv"), index=False)
    df.to_csv(os.path.join(out, "bom-crlf.csv"), index=False, encoding="utf-8-sig", lineterminator="\r\n")
    # Spark's CSV writer escapes quotes with a backslash (escape='\\') and quotes fields that
    # need it; Python's csv module writes the same with doublequote=False
    with open(os.path.join(out, "spark-escape.csv"), "w", newline="") as f:
        w = csv.writer(f, doublequote=False, escapechar="\\", quoting=csv.QUOTE_MINIMAL)
        w.writerow(df.columns)
        for row in df.itertuples(index=False):
            w.writerow(["" if (isinstance(v, float) and math.isnan(v)) else v for v in row])
    # a Spark CSV folder: part files with a header each, gzip-compressed, and bookkeeping
    spark = os.path.join(out, "spark-folder")
    os.makedirs(spark, exist_ok=True)
    step = math.ceil(len(df) / 3)
    for i in range(3):
        part = df.iloc[i * step:(i + 1) * step]
        with gzip.open(os.path.join(spark, f"part-{i:05d}-9a.csv.gz"), "wt", newline="") as f:
            part.to_csv(f, index=False)
    open(os.path.join(spark, "_SUCCESS"), "w").close()
    print(json.dumps(sorted(os.listdir(out))))


def split_lines(path):
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [l[:-1] if l.endswith(b"\r") else l for l in lines]


def views_parquet(src, out, selected):
    """Every six-field line of SRC as a row of string columns (malformed ones too: empty
    fields become nulls, a bad household_id stays text), in 5 row groups, zstd; the lines it
    took go to SELECTED so that the test analyzes the same records from a file."""
    rows, kept = [], []
    for l in split_lines(src):
        try:
            text = l.decode("utf-8")
        except UnicodeDecodeError:
            continue
        fields = text.split(",")
        if len(fields) != 6:
            continue
        rows.append([f if f != "" else None for f in fields])
        kept.append(l)
    names = ["device_id", "event_date", "event_time", "station_num", "prog_code", "household_id"]
    t = pa.table({n: pa.array([r[i] for r in rows], pa.string()) for i, n in enumerate(names)})
    pq.write_table(t, out, compression="zstd", row_group_size=max(1, len(rows) // 5))
    with open(selected, "wb") as f:
        f.write(b"".join(l + b"\n" for l in kept))
    print(f"{len(rows)} rows")


def views_typed_parquet(src, out, valid):
    """The valid lines of SRC with the seed's SCHEMA types (household_id LONG), brotli."""
    rows, kept = [], []
    for l in split_lines(src):
        fields = l.split(b",")
        if len(fields) != 6 or any(f == b"" for f in fields) or not l.isascii():
            continue
        try:
            hh = int(fields[5])
        except ValueError:
            continue
        if not -2**63 <= hh < 2**63:
            continue
        rows.append([f.decode() for f in fields[:5]] + [hh])
        kept.append(l)
    names = ["device_id", "event_date", "event_time", "station_num", "prog_code"]
    cols = {n: pa.array([r[i] for r in rows], pa.string()) for i, n in enumerate(names)}
    cols["household_id"] = pa.array([r[5] for r in rows], pa.int64())
    pq.write_table(pa.table(cols), out, compression="brotli")
    with open(valid, "wb") as f:
        f.write(b"".join(l + b"\n" for l in kept))
    print(f"{len(rows)} rows")


def views_gzip_folder(src, out, parts):
    """SRC's lines in PARTS gzip files (Python's gzip, not viewpulse's), the last one without
    a final newline, plus Spark's bookkeeping files."""
    lines = split_lines(src)
    parts = int(parts)
    os.makedirs(out, exist_ok=True)
    step = math.ceil(len(lines) / parts)
    for i in range(parts):
        chunk = lines[i * step:(i + 1) * step]
        body = b"\n".join(chunk) + (b"" if i == parts - 1 else b"\n")
        with gzip.open(os.path.join(out, f"part-{i:05d}.csv.gz"), "wb") as f:
            f.write(body)
    open(os.path.join(out, "_SUCCESS"), "w").close()
    with open(os.path.join(out, ".part-00000.csv.gz.crc"), "wb") as f:
        f.write(b"\x00crc")
    print(f"{len(lines)} lines in {parts} files")


def households_parquet(src, out, no_rank):
    import pandas as pd
    df = pd.read_csv(src, dtype={"household_id": "int64", "cluster": "int32"})
    keep = ["household_id", "cluster", "distance"] + ([] if no_rank else ["rank"])
    os.makedirs(out, exist_ok=True)
    # shuffled, as another system's output need not be sorted
    df[keep].sample(frac=1.0, random_state=7).to_parquet(os.path.join(out, "households.parquet"), index=False)
    print(f"{len(df)} households")


def read_csv_typed(path, types):
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        rows = []
        for row in r:
            rows.append({k: types[k](v) for k, v in row.items()})
        return r.fieldnames, rows


def optional(v):
    """An interval column: empty in the CSV when not computed (null in Parquet)."""
    return None if v == "" else float(v)


def missing(v):
    return v is None or (isinstance(v, float) and v != v)


def close(a, b):
    if missing(a) or missing(b):
        # a null, or pandas' NaN for it
        return missing(a) and missing(b)
    if isinstance(a, float) or isinstance(b, float):
        return a == b or abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))
    return a == b


def compare(name, csv_rows, cols, table_rows):
    if len(csv_rows) != len(table_rows):
        fail(f"{name}: {len(table_rows)} rows, the CSV has {len(csv_rows)}")
    for i, (c, t) in enumerate(zip(csv_rows, table_rows)):
        for k in cols:
            if not close(c[k], t[k]):
                fail(f"{name}: row {i + 1} column {k}: {t[k]!r}, the CSV says {c[k]!r}")


def check_ratings(out):
    import pandas as pd
    import polars as pl
    specs = {
        "popularity": {"subset": str, "cluster": int, "station_num": str, "views": int,
                       "popularity_rating": float, "rank": int,
                       "popularity_lo": optional, "popularity_hi": optional},
        "genpop": {"station_num": str, "views": int, "genpop_rating": float},
        "diff_rank": {"subset": str, "cluster": int, "rank": int, "station_num": str,
                      "diff_rank": float, "popularity_rating": float, "genpop_rating": float,
                      "index": float, "popularity_lo": optional, "popularity_hi": optional,
                      "diff_rank_lo": optional, "diff_rank_hi": optional,
                      "top_k_share": optional},
    }
    want_types = {"subset": pa.string(), "station_num": pa.string(), "cluster": pa.int32(),
                  "rank": pa.int32(), "views": pa.int64()}
    report = {}
    for name, types in specs.items():
        cols, rows = read_csv_typed(os.path.join(out, f"{name}.csv"), types)
        path = os.path.join(out, f"{name}.parquet")
        t = pq.read_table(path)
        if t.column_names != cols:
            fail(f"{name}.parquet columns {t.column_names}, the CSV's {cols}")
        for f in t.schema:
            want = want_types.get(f.name, pa.float64())
            if f.type != want:
                fail(f"{name}.parquet column {f.name} is {f.type}, want {want}")
        compare(f"{name}.parquet (pyarrow)", rows, cols, t.to_pylist())
        compare(f"{name}.parquet (polars)", rows, cols, pl.read_parquet(path).to_dicts())
        pdf = pd.read_parquet(path)
        if str(pdf["station_num"].dtype) not in ("object", "string", "str"):
            fail(f"pandas reads {name}.parquet station_num as {pdf['station_num'].dtype}")
        compare(f"{name}.parquet (pandas)", rows, cols, pdf.to_dict("records"))
        report[name] = len(rows)
    # what the issue is about: pandas' own CSV reading loses leading zeros, ours does not
    g = pd.read_csv(os.path.join(out, "genpop.csv"))
    report["pandas_csv_station_dtype"] = str(g["station_num"].dtype)
    report["parquet_stations_with_leading_zero"] = sum(
        1 for s in pq.read_table(os.path.join(out, "genpop.parquet")).column("station_num").to_pylist()
        if s.startswith("0"))
    print(json.dumps(report))


def check_households(model):
    import polars as pl
    _, hh = read_csv_typed(os.path.join(model, "households.csv"),
                           {"household_id": int, "cluster": int, "distance": float, "rank": int,
                            "pca_x": float, "pca_y": float})
    with open(os.path.join(model, "features.csv"), newline="") as f:
        r = csv.reader(f)
        next(r)
        feats = {int(row[0]): [float(v) for v in row[1:]] for row in r}
    path = os.path.join(model, "households.parquet")
    t = pq.read_table(path)
    want = ["household_id", "cluster", "distance", "rank", "pca_x", "pca_y", "features_for_cluster"]
    if t.column_names != want:
        fail(f"households.parquet columns {t.column_names}, want {want}")
    types = {f.name: f.type for f in t.schema}
    if types["household_id"] != pa.int64() or types["cluster"] != pa.int32() \
            or types["distance"] != pa.float64() or not pa.types.is_list(types["features_for_cluster"]) \
            or types["features_for_cluster"].value_type != pa.float64():
        fail(f"households.parquet types {types}")
    rows = t.to_pylist()
    compare("households.parquet", hh, ["household_id", "cluster", "distance", "rank", "pca_x", "pca_y"], rows)
    for row in rows:
        got, exp = row["features_for_cluster"], feats[row["household_id"]]
        if len(got) != len(exp) or not all(close(a, b) for a, b in zip(got, exp)):
            fail(f"household {row['household_id']}: features {got}, features.csv {exp}")
    pl.read_parquet(path)
    print(json.dumps({"households": len(rows), "features": len(rows[0]["features_for_cluster"])}))


def produce(bootstrap, topic, src, codec):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec,
                  "linger.ms": 20, "batch.num.messages": 500, "enable.idempotence": False})
    n = 0
    for l in split_lines(src):
        while True:
            try:
                p.produce(topic, value=l)
                break
            except BufferError:
                p.poll(0.1)
        n += 1
    left = p.flush(60)
    if left:
        fail(f"{left} messages not delivered to {topic}")
    print(f"{n} records to {topic} with {codec}")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "demographics-datasets":
        demographics_datasets(*args)
    elif cmd == "demographics-csvs":
        demographics_csvs(*args)
    elif cmd == "views-parquet":
        views_parquet(*args)
    elif cmd == "views-typed-parquet":
        views_typed_parquet(*args)
    elif cmd == "views-gzip-folder":
        views_gzip_folder(*args)
    elif cmd == "households-parquet":
        households_parquet(args[0], args[1], "--no-rank" in args[2:])
    elif cmd == "check-ratings":
        check_ratings(*args)
    elif cmd == "check-households":
        check_households(*args)
    elif cmd == "produce":
        produce(*args)
    else:
        fail(f"unknown command {cmd}")


if __name__ == "__main__":
    main()

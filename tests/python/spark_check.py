"""A check with Apache Spark itself, run by hand (pyspark is 300 MB, so CI uses pyarrow, Polars
and pandas instead; see README, "Data in and out"):

    python -m venv /tmp/spark && /tmp/spark/bin/pip install pyspark
    /tmp/spark/bin/python tests/python/spark_check.py VIEWPULSE GOLDEN WORKDIR

Spark writes the golden demographics as a Parquet folder and as a CSV folder, and the golden
views as a text folder (its own part files, _SUCCESS and .crc files); viewpulse segments and
analyzes them; Spark reads viewpulse's Parquet outputs back with no options, and the values
must equal viewpulse's CSVs (read with every column as a string, then cast) to 1e-12.
"""

import csv
import os
import subprocess
import sys

from pyspark.sql import SparkSession

vp, golden, work = sys.argv[1:4]
spark = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").getOrCreate()
spark.sparkContext.setLogLevel("ERROR")


def run(*args):
    r = subprocess.run([vp, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"viewpulse {' '.join(args)}: {r.stderr}")
    return r.stdout


dem = spark.read.parquet(os.path.join(golden, "input/demographics.parquet"))
dem.repartition(3).write.mode("overwrite").parquet(os.path.join(work, "dem-parquet"))
dem.repartition(3).write.mode("overwrite").option("header", True).csv(os.path.join(work, "dem-csv"))
spark.read.text(os.path.join(golden, "input/views_static.csv")).repartition(3) \
    .write.mode("overwrite").option("compression", "gzip").text(os.path.join(work, "views-text"))
print("spark wrote:", sorted(os.listdir(os.path.join(work, "dem-parquet"))))

run("segment", "--demographics", os.path.join(golden, "input/demographics.parquet"),
    "--out", os.path.join(work, "ref"), "--no-charts", "--format", "csv,parquet")
for name in ["dem-parquet", "dem-csv"]:
    run("segment", "--demographics", os.path.join(work, name), "--out", os.path.join(work, "m-" + name), "--no-charts")
    a = open(os.path.join(work, "m-" + name, "features.csv")).read()
    b = open(os.path.join(work, "ref", "features.csv")).read()
    assert a == b, f"{name}: features differ"
    print(f"segment of Spark's {name} folder: features.csv identical to the single file's")
run("analyze", "--model", os.path.join(work, "ref"), "--views", os.path.join(work, "views-text"),
    "--out", os.path.join(work, "out"), "--no-report", "--format", "csv,parquet")
run("analyze", "--model", os.path.join(work, "ref"), "--views", os.path.join(golden, "input/views_static.csv"),
    "--out", os.path.join(work, "out-file"), "--no-report")
for f in ["popularity.csv", "genpop.csv", "diff_rank.csv"]:
    assert open(os.path.join(work, "out", f)).read() == open(os.path.join(work, "out-file", f)).read(), f
print("analyze of Spark's gzip text folder: the three CSVs identical to the single file's")


def close(a, b):
    if isinstance(a, float):
        return a == b or abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))
    return a == b


for name in ["popularity", "genpop", "diff_rank"]:
    df = spark.read.parquet(os.path.join(work, "out", f"{name}.parquet"))
    types = dict(df.dtypes)
    assert types["station_num"] == "string", types
    rows = [r.asDict() for r in df.collect()]
    with open(os.path.join(work, "out", f"{name}.csv")) as f:
        want = list(csv.DictReader(f))
    assert len(rows) == len(want), name
    for r, w in zip(rows, want):
        for k, v in r.items():
            if v is None:
                # an interval column without an interval: null in Parquet, empty in the CSV
                assert w[k] == "", (name, k, w[k])
                continue
            assert close(v, type(v)(w[k])), (name, k, v, w[k])
    print(f"Spark reads {name}.parquet: {types}; {len(rows)} rows equal the CSV")
hh = spark.read.parquet(os.path.join(work, "ref", "households.parquet"))
print("Spark reads households.parquet:", hh.dtypes, hh.count(), "rows")
spark.stop()

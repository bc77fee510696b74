#!/usr/bin/env python3
"""Validate the raw dataset and split it into a train and a test set.

Reads a CSV whose last column is a 0/1 label and whose other columns are
numeric features, shuffles the rows with a seeded RNG and writes
<out-dir>/train.csv and <out-dir>/test.csv. Only the standard library is used.
"""

import argparse
import csv
import os
import random
import sys


def write_result(path: str, value: str) -> None:
    # Tekton results are read verbatim: no trailing newline.
    with open(path, "w", encoding="utf-8") as f:
        f.write(value)


def fail(message: str) -> None:
    print(f"prepare: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--input", required=True, help="raw CSV dataset")
    p.add_argument("--workspace", required=True, help="root of the work workspace")
    p.add_argument("--out-dir", default="data", help="output dir, relative to --workspace")
    p.add_argument("--test-fraction", type=float, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--result-train-path", required=True)
    p.add_argument("--result-test-path", required=True)
    p.add_argument("--result-n-features", required=True)
    args = p.parse_args()

    if not 0.0 < args.test_fraction < 1.0:
        fail(f"test-fraction must be in (0, 1), got {args.test_fraction}")

    with open(args.input, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or len(header) < 2:
            fail(f"{args.input}: expected a header with features and a label")
        rows = []
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                fail(f"{args.input}:{lineno}: expected {len(header)} columns, got {len(row)}")
            try:
                [float(x) for x in row[:-1]]
            except ValueError:
                fail(f"{args.input}:{lineno}: non-numeric feature in {row}")
            if row[-1] not in ("0", "1"):
                fail(f"{args.input}:{lineno}: label must be 0 or 1, got {row[-1]!r}")
            rows.append(row)

    if len(rows) < 4:
        fail(f"{args.input}: need at least 4 rows, got {len(rows)}")

    random.Random(args.seed).shuffle(rows)
    n_test = min(len(rows) - 1, max(1, round(len(rows) * args.test_fraction)))
    test, train = rows[:n_test], rows[n_test:]

    out_dir = os.path.join(args.workspace, args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    for name, part in (("train.csv", train), ("test.csv", test)):
        with open(os.path.join(out_dir, name), "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            w.writerows(part)

    n_features = len(header) - 1
    positives = sum(r[-1] == "1" for r in rows)
    print(f"read {len(rows)} rows x {n_features} features ({positives} positive) from {os.path.basename(args.input)}")
    print(f"split with seed={args.seed}: {len(train)} train / {len(test)} test rows")

    write_result(args.result_train_path, f"{args.out_dir}/train.csv")
    write_result(args.result_test_path, f"{args.out_dir}/test.csv")
    write_result(args.result_n_features, str(n_features))


if __name__ == "__main__":
    main()

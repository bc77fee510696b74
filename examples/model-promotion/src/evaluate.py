#!/usr/bin/env python3
"""Score a trained model on the held-out test set and gate its promotion.

Writes the accuracy as a plain result, a small metrics object result
({"accuracy": ..., "n": ..., "correct": ...}, all strings as Tekton requires)
and <workspace>/eval/metrics.json for the package step. Exits non-zero when
the accuracy is below --min-accuracy, which stops the model from being
packaged.
"""

import argparse
import csv
import json
import os
import sys


def write_result(path: str, value: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(value)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workspace", required=True, help="root of the work workspace")
    p.add_argument("--model", required=True, help="model JSON, relative to --workspace")
    p.add_argument("--test", required=True, help="test CSV, relative to --workspace")
    p.add_argument("--metrics-out", default="eval/metrics.json", help="relative to --workspace")
    p.add_argument("--min-accuracy", type=float, default=0.0)
    p.add_argument("--result-accuracy", required=True)
    p.add_argument("--result-metrics", required=True)
    args = p.parse_args()

    with open(os.path.join(args.workspace, args.model), encoding="utf-8") as f:
        model = json.load(f)
    mean, std, w, b = model["mean"], model["std"], model["weights"], model["bias"]

    tp = tn = fp = fn = 0
    with open(os.path.join(args.workspace, args.test), newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        if header[:-1] != model["features"]:
            print(f"evaluate: test columns {header[:-1]} do not match model features {model['features']}", file=sys.stderr)
            sys.exit(1)
        for row in reader:
            if not row:
                continue
            x = [float(v) for v in row[:-1]]
            score = sum(wj * (xj - mj) / sj for wj, xj, mj, sj in zip(w, x, mean, std)) + b
            predicted, actual = score >= 0, row[-1] == "1"
            if predicted and actual:
                tp += 1
            elif predicted:
                fp += 1
            elif actual:
                fn += 1
            else:
                tn += 1

    n = tp + tn + fp + fn
    if n == 0:
        print("evaluate: empty test set", file=sys.stderr)
        sys.exit(1)
    accuracy = round((tp + tn) / n, 4)
    metrics = {"accuracy": str(accuracy), "n": str(n), "correct": str(tp + tn)}

    out = os.path.join(args.workspace, args.metrics_out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(
            {
                "accuracy": accuracy,
                "confusion": {"tp": tp, "tn": tn, "fp": fp, "fn": fn},
                "min-accuracy": args.min_accuracy,
                "test-rows": n,
            },
            f,
            indent=2,
            sort_keys=True,
        )
        f.write("\n")

    write_result(args.result_accuracy, str(accuracy))
    write_result(args.result_metrics, json.dumps(metrics, separators=(",", ":")))

    print(f"test accuracy {accuracy} ({tp + tn}/{n} correct; tp={tp} tn={tn} fp={fp} fn={fn})")
    if accuracy < args.min_accuracy:
        print(f"evaluate: accuracy {accuracy} is below min-accuracy {args.min_accuracy}: not promoting", file=sys.stderr)
        sys.exit(1)
    print(f"accuracy >= min-accuracy {args.min_accuracy}: model can be promoted")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Train a logistic-regression classifier with plain SGD, in pure Python.

Features are standardised with the training-set mean and standard deviation
(stored in the model so evaluation applies the same scaling). Training is
deterministic for a given dataset, learning rate, epoch count and seed.
The model is written as JSON with rounded floats and sorted keys, so the same
inputs always give the same bytes.
"""

import argparse
import csv
import json
import math
import os
import random
import sys


def write_result(path: str, value: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(value)


def sigmoid(z: float) -> float:
    z = max(-60.0, min(60.0, z))
    return 1.0 / (1.0 + math.exp(-z))


def load(path: str):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        xs, ys = [], []
        for row in reader:
            if row:
                xs.append([float(v) for v in row[:-1]])
                ys.append(int(row[-1]))
    return header, xs, ys


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workspace", required=True, help="root of the work workspace")
    p.add_argument("--train", required=True, help="training CSV, relative to --workspace")
    p.add_argument("--model-out", default="model/model.json", help="relative to --workspace")
    p.add_argument("--learning-rate", type=float, required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--expect-features", type=int, help="fail unless the data has this many features")
    p.add_argument("--result-model-path", required=True)
    p.add_argument("--result-train-accuracy", required=True)
    args = p.parse_args()

    if args.learning_rate <= 0 or args.epochs < 1:
        print("train: learning-rate must be > 0 and epochs >= 1", file=sys.stderr)
        sys.exit(1)

    header, xs, ys = load(os.path.join(args.workspace, args.train))
    n, d = len(xs), len(header) - 1
    if args.expect_features is not None and d != args.expect_features:
        print(f"train: expected {args.expect_features} features, got {d}", file=sys.stderr)
        sys.exit(1)

    mean = [sum(x[j] for x in xs) / n for j in range(d)]
    std = [math.sqrt(sum((x[j] - mean[j]) ** 2 for x in xs) / n) or 1.0 for j in range(d)]
    zs = [[(x[j] - mean[j]) / std[j] for j in range(d)] for x in xs]

    rng = random.Random(args.seed)
    w = [0.0] * d
    b = 0.0
    order = list(range(n))
    loss = 0.0
    for _ in range(args.epochs):
        rng.shuffle(order)
        loss = 0.0
        for i in order:
            p_i = sigmoid(sum(wj * zj for wj, zj in zip(w, zs[i])) + b)
            err = p_i - ys[i]
            for j in range(d):
                w[j] -= args.learning_rate * err * zs[i][j]
            b -= args.learning_rate * err
            p_c = min(max(p_i, 1e-12), 1 - 1e-12)
            loss -= ys[i] * math.log(p_c) + (1 - ys[i]) * math.log(1 - p_c)
    loss /= n

    model = {
        "kind": "logistic-regression",
        "features": header[:-1],
        "label": header[-1],
        "mean": [round(v, 6) for v in mean],
        "std": [round(v, 6) for v in std],
        "weights": [round(v, 6) for v in w],
        "bias": round(b, 6),
        "hyperparameters": {
            "learning-rate": args.learning_rate,
            "epochs": args.epochs,
            "seed": args.seed,
        },
        "training-rows": n,
    }

    # Training accuracy with the rounded (i.e. the shipped) parameters.
    correct = 0
    for z, y in zip(zs, ys):
        score = sum(wj * zj for wj, zj in zip(model["weights"], z)) + model["bias"]
        correct += int((score >= 0) == (y == 1))
    train_acc = round(correct / n, 4)

    out = os.path.join(args.workspace, args.model_out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(model, f, indent=2, sort_keys=True)
        f.write("\n")

    print(f"trained logistic regression on {n} rows x {d} features (lr={args.learning_rate}, epochs={args.epochs}, seed={args.seed})")
    print(f"final log-loss {loss:.4f}, train accuracy {train_acc}")

    write_result(args.result_model_path, args.model_out)
    write_result(args.result_train_accuracy, str(train_acc))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Bundle the trained model and its evaluation into one artifact file.

The artifact is <workspace>/dist/<name>.json: the model, the evaluation
metrics and the model name, serialised deterministically (sorted keys, no
timestamps), so identical inputs give an identical sha256 digest.
"""

import argparse
import hashlib
import json
import os
import re
import sys


def write_result(path: str, value: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(value)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workspace", required=True, help="root of the work workspace")
    p.add_argument("--model", required=True, help="model JSON, relative to --workspace")
    p.add_argument("--metrics", default="eval/metrics.json", help="relative to --workspace")
    p.add_argument("--name", required=True, help="model name, used as the file name")
    p.add_argument("--out-dir", default="dist", help="relative to --workspace")
    p.add_argument("--result-model-uri", required=True)
    p.add_argument("--result-model-digest", required=True)
    args = p.parse_args()

    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", args.name):
        print(f"package: model name {args.name!r} must match [a-z0-9][a-z0-9._-]*", file=sys.stderr)
        sys.exit(1)

    with open(os.path.join(args.workspace, args.model), encoding="utf-8") as f:
        model = json.load(f)
    with open(os.path.join(args.workspace, args.metrics), encoding="utf-8") as f:
        metrics = json.load(f)

    artifact = {
        "format": "tenon-example/logistic-regression/v1",
        "name": args.name,
        "model": model,
        "evaluation": metrics,
    }
    data = (json.dumps(artifact, indent=2, sort_keys=True) + "\n").encode("utf-8")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    out_dir = os.path.join(args.workspace, args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.abspath(os.path.join(out_dir, f"{args.name}.json"))
    with open(out, "wb") as f:
        f.write(data)

    uri = "file://" + out
    print(f"packaged {args.name} ({len(data)} bytes)")
    print(f"  uri:    {uri}")
    print(f"  digest: {digest}")

    write_result(args.result_model_uri, uri)
    write_result(args.result_model_digest, digest)


if __name__ == "__main__":
    main()

#!/bin/sh
# The README's main job: three trials of the digits notebook with different learning rates,
# each a real kernel run through `nbsweep run`, then the validation accuracy of each.
set -eu
cd "$(dirname "$0")/.."
out=nbsweep-runs/demo
mkdir -p "$out"
for lr in 0.0003 0.003 0.03; do
    echo "== nbsweep run notebooks/digits.ipynb --learning_rate=$lr --epochs=8"
    nbsweep run notebooks/digits.ipynb --learning_rate=$lr --epochs=8 \
        -o "$out/digits-lr$lr.ipynb" --metrics-json "$out/metrics-lr$lr.json"
done
echo
echo "learning_rate  val_accuracy  executed notebook"
for lr in 0.0003 0.003 0.03; do
    python - "$lr" "$out" <<'PY'
import json, sys
lr, out = sys.argv[1], sys.argv[2]
summary = json.load(open(f"{out}/metrics-lr{lr}.json"))["summary"]
print(f"{lr:<14} {summary['val_accuracy']:<13.4f} {out}/digits-lr{lr}.ipynb")
PY
done

#!/usr/bin/env bash
# Run one sweep trial of notebooks/digits.ipynb by hand, the way `wandb agent` would.
#
#   bash examples/run_one_trial.sh            # from anywhere; needs `pip install -e '.[examples]'`
#
# Values come from examples/params.yaml (-f), then from --name=value arguments, which win.
# The executed notebook (with its outputs and the injected-parameters cell) goes to
# nbsweep-runs/digits/trial/digits.ipynb; the metrics to nbsweep-runs/digits/trial/metrics.json.
set -euo pipefail

cd "$(dirname "$0")/.."
out=nbsweep-runs/digits/trial
mkdir -p "$out"  # --metrics-json does not create its folder

nbsweep run notebooks/digits.ipynb \
    -f examples/params.yaml \
    --learning_rate=0.01 \
    --seed=1 \
    --output "$out/digits.ipynb" \
    --metrics-json "$out/metrics.json"

# `nbsweep run` prints the final metric values (name<TAB>value) on stdout, progress on
# stderr, and exits 1 if a cell raised. The JSON holds the summary and per-epoch history:
python -c 'import json, sys; print(json.load(open(sys.argv[1]))["summary"])' "$out/metrics.json"

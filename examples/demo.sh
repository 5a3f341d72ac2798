#!/bin/sh
# The README's main job: a real local sweep of notebooks/digits.ipynb (Bayesian search with
# Hyperband, 12 trials) on the embedded engine, with 2 agents sharing it, then the leaderboard
# and the best run's executed notebook. No W&B server or account is involved.
set -eu
cd "$(dirname "$0")/.."
store=nbsweep-runs/demo/sweeps.db
created=$(nbsweep sweep --local sweeps/digits-demo.yaml --store "$store")
echo "$created"
sweep=$(echo "$created" | sed -n 's/^created local sweep \([a-z0-9]*\) .*/\1/p')
nbsweep agent "local:$sweep" --store "$store" --workers 2
echo
nbsweep status "local:$sweep" --store "$store"

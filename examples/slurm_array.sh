#!/usr/bin/env bash
# One W&B sweep across a SLURM cluster: a job array whose every task is one `nbsweep agent`
# on one GPU, each asking the W&B server for its next trial.
#
#   nbsweep sweep sweeps/digits-random.yaml           # once, on the login node; prints the id
#   sbatch --export=ALL,SWEEP=me/digits/k3x9q2ab,COUNT=5 examples/slurm_array.sh
#
# Submit from the repository root: the agents run the sweep's `program:` relative to it and
# save each trial's notebook in nbsweep-runs/<sweep>/<run>/ there (run ids are unique, so the
# tasks never write to the same folder; the folder must be on a file system every node sees).
#
# Where the sweep lives. Beyond one machine the controller is the W&B server, cloud or
# self-hosted: it holds the sweep, picks each trial's values (grid, random, bayes), applies
# early termination and stops, and every agent on every node just asks it for the next trial.
# The compute nodes therefore need HTTPS to it: api.wandb.ai, or your server, named with
#   export WANDB_BASE_URL=https://wandb.example.org        # before sbatch; --export=ALL passes it
# Credentials come from WANDB_API_KEY in the environment or ~/.netrc (`wandb login` once);
# never write the key into this file.
# A local sweep (`nbsweep sweep --local`, a SQLite store, no server) is for one machine only:
# SQLite's locking is not safe on NFS or Lustre, so do not point tasks on several nodes at one
# store. On one multi-GPU node, use `nbsweep agent local:ID --gpus all` instead of an array.
#
# SLURM reads the #SBATCH lines below (up to the first command); `sbatch --array=0-7` and the
# like on the command line override them.
#SBATCH --job-name=nbsweep
#SBATCH --array=0-3
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --signal=B:TERM@120
#SBATCH --output=nbsweep-slurm-%A_%a.out
#
# --array=0-3        four agents; 0-15%4 queues sixteen and runs at most four at a time.
# --gres=gpu:1       one GPU per agent: SLURM sets CUDA_VISIBLE_DEVICES to it and nbsweep
#                    hands that on to the notebook's kernel. For whole nodes, ask for
#                    --gres=gpu:4 with no array and run `nbsweep agent "$SWEEP" --gpus all`.
# --signal=B:TERM@120  SIGTERM to this script (which `exec` below makes nbsweep itself) two
#                    minutes before the time limit: nbsweep interrupts the running cell, waits
#                    --stop-grace, kills the kernel, saves the partial notebook and marks the
#                    run stopped, instead of SLURM killing everything mid-write.
# --output           the task's log in the submit directory (SLURM does not create folders).

set -euo pipefail

: "${SWEEP:?set SWEEP=ENTITY/PROJECT/SWEEP_ID, e.g. sbatch --export=ALL,SWEEP=me/digits/k3x9q2ab}"
count="${COUNT:-5}"  # trials per task at most; the sweep's own run_cap also ends it

cd "${SLURM_SUBMIT_DIR:-.}"
if [[ -f .venv/bin/activate ]]; then  # `make test` or `make demo` created it
    # shellcheck source=/dev/null
    source .venv/bin/activate
fi

echo "task ${SLURM_ARRAY_TASK_ID:-0} of job ${SLURM_ARRAY_JOB_ID:-none} on $(hostname):" \
    "GPU ${CUDA_VISIBLE_DEVICES:-none}, sweep ${SWEEP}, up to ${count} trials"

# exec: nbsweep gets SLURM's signals directly. Its exit status is the task's: 0 done (or the
# server said the sweep is over), 1 too many failed trials in a row, 2 a usage error.
exec nbsweep agent "$SWEEP" --count "$count"

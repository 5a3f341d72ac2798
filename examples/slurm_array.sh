#!/usr/bin/env bash
# One sweep across a SLURM cluster: a job array whose every task is one `nbsweep agent` on
# one GPU, each asking the sweep's controller for its next trial. The controller is either
#
# * a PostgreSQL database (a local sweep: W&B's engine runs inside each agent, no W&B server,
#   no internet; the nodes only need to reach the database):
#
#     export NBSWEEP_STORE=postgresql://nbsweep@db-node:5432/sweeps   # password: ~/.pgpass
#     nbsweep sweep --local sweeps/digits-random.yaml  # once, on the login node; prints the id
#     sbatch --export=ALL,SWEEP=local:k3x9q2ab,COUNT=5 examples/slurm_array.sh
#
# * or a W&B server, cloud or self-hosted:
#
#     nbsweep sweep sweeps/digits-random.yaml           # once, on the login node; prints the id
#     sbatch --export=ALL,SWEEP=me/digits/k3x9q2ab,COUNT=5 examples/slurm_array.sh
#
# Submit from the repository root: the agents run the sweep's `program:` relative to it and
# save each trial's notebook in nbsweep-runs/<sweep>/<run>/ there (run ids are unique, so the
# tasks never write to the same folder; the folder must be on a file system every node sees).
#
# Where the sweep lives.
# * PostgreSQL (SWEEP=local:ID, NBSWEEP_STORE=postgresql://...): the database holds the sweep,
#   its runs and their metrics; each hand-out is one transaction under one lock, so tasks
#   started at the same instant get different trials and a grid runs once. Each task goes by
#   its own agent name (host name and array index: nodes that share a host name stay
#   distinct); a task that dies is noticed by its silence, and its run is requeued after
#   HEARTBEAT_TIMEOUT seconds (default 300 here). A dropped connection or a restarted server
#   is waited for (NBSWEEP_STORE_RECONNECT_TIMEOUT, 120 s) without stopping the trial. Keep
#   the password out of this file and of the URL: ~/.pgpass or PGPASSWORD. Install with
#   `pip install 'nbsweep[local,postgres]'`.
# * W&B: the server picks each trial's values and applies early termination and stops. The
#   compute nodes need HTTPS to it: api.wandb.ai, or your server, named with
#     export WANDB_BASE_URL=https://wandb.example.org      # before sbatch; --export=ALL passes it
#   Credentials come from WANDB_API_KEY in the environment or ~/.netrc (`wandb login` once);
#   never write the key into this file.
# An SQLite store (the default for local sweeps) is for one machine only: SQLite's locking is
# not safe on NFS or Lustre, and nbsweep refuses it there. On one multi-GPU node, use
# `nbsweep agent local:ID --gpus all` instead of an array.
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

: "${SWEEP:?set SWEEP=local:ID (with NBSWEEP_STORE=postgresql://...) or ENTITY/PROJECT/ID}"
count="${COUNT:-5}"  # trials per task at most; the sweep's own run_cap also ends it
agent_options=(--count "$count")
if [[ "$SWEEP" == local:* ]]; then
    case "${NBSWEEP_STORE:-}" in
        postgresql://* | postgres://*) ;;
        *)
            echo "SWEEP=$SWEEP is a local sweep: set NBSWEEP_STORE=postgresql://... so that" \
                "every node shares it (an SQLite file is for one machine)" >&2
            exit 2
            ;;
    esac
    agent_options+=(
        --agent-name "$(hostname)-${SLURM_ARRAY_TASK_ID:-0}"
        --heartbeat-timeout "${HEARTBEAT_TIMEOUT:-300}"
        --requeue-crashed
    )
fi

cd "${SLURM_SUBMIT_DIR:-.}"
if [[ -f .venv/bin/activate ]]; then  # `make test` or `make demo` created it
    # shellcheck source=/dev/null
    source .venv/bin/activate
fi

echo "task ${SLURM_ARRAY_TASK_ID:-0} of job ${SLURM_ARRAY_JOB_ID:-none} on $(hostname):" \
    "GPU ${CUDA_VISIBLE_DEVICES:-none}, sweep ${SWEEP}, up to ${count} trials"

# exec: nbsweep gets SLURM's signals directly. Its exit status is the task's: 0 done (or the
# server said the sweep is over), 1 too many failed trials in a row, 2 a usage error.
exec nbsweep agent "$SWEEP" "${agent_options[@]}"

"""Local sweeps with no W&B server: W&B's engine, the store, the server the agent talks to,
liveness, leaderboard and plots."""

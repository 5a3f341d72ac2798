"""Sweeps: the agent loop, the sweep server protocol and W&B's API, a trial as a W&B run,
sweep configs and the values a sweep passes, agent workers."""

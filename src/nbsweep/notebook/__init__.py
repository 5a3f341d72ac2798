"""Notebooks as files and source: reading and writing them, finding and injecting parameters,
literals, install lines, secrets. Pure: imports no kernel and no wandb."""

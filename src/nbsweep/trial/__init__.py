"""One trial: inject, execute, collect its metrics, save; and how it shows its progress."""

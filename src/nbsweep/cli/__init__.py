"""The ``nbsweep`` command: a thin client of the library."""

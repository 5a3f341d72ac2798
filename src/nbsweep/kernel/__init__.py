"""Kernel processes: launching (exec or fork), pre-starting, executing cells, stopping; and
the code that runs inside the kernel (``api``, ``hooks``). Kept empty: the kernel imports it."""

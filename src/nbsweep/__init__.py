"""nbsweep: run a Jupyter notebook as a W&B sweep program.

Inside a notebook, ``nbsweep.log({"val_loss": 0.3})`` reports metrics to the runner.
"""

from nbsweep.kernel_api import log

__all__ = ["__version__", "log"]
__version__ = "0.1.0"

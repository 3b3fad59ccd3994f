"""warmbench: does persona training (warmth) cost accuracy?

Importing the package is cheap on purpose (no torch): the Snakefile imports `warmbench.core`'s config, validation,
grid and checks modules at parse time, and every SLURM job re-parses the Snakefile. Heavy libraries are imported inside the stage functions.
"""

__version__ = "0.1.0"

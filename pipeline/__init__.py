"""Learn one task ordering with a continual-learning strategy and measure it (the R matrix)."""

from pipeline.cpu_kernels import pin

pin()  # before torch's first kernel: the same R on every x86 machine (pipeline/cpu_kernels.py)

"""What is learned: data sources, seeded transforms and named task pools."""

from pipeline.cpu_kernels import pin

pin()  # task transforms are torch kernels too: the same data on every x86 machine

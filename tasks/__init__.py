"""What is learned: data sources, seeded transforms and named task pools."""

import pipeline  # noqa: F401  (pins the CPU kernels first: task transforms are torch kernels too)

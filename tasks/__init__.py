"""What is learned: data sources, seeded transforms and named task pools."""

"""Learn one task ordering with a continual-learning strategy and measure it (the R matrix)."""

"""The task-affinity graph: measured transfer and interference, the graph model of ACC, ordering rules."""

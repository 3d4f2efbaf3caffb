"""Job side: runs inside one job, on one node, for one cell."""

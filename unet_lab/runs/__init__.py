"""Everything a run leaves on disk: its folder, the decisions to resume it, its summary
(``metrics.json``), the checkpoint format, and comparisons of runs."""

"""Studies over many runs: `experiment` (fit -> generate -> evaluate for every regime) and `sweep` (levers chosen
on val, confirmed once on test)."""

"""`evaluate`: regimes and arms, classifier runs cached per arm, the statistics of the gains (intervals over
independent units) and the report."""

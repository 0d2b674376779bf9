"""`audit`: fidelity, diversity and memorization of a synthetic set, each beside a real-vs-real baseline."""

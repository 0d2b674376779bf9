"""`generate`: what to draw (settings, per-class targets, real sources of variations) and drawing it into a
synthetic folder, deterministic and resumable."""

"""The on-disk contract between stages: atomic files and folder locks, the run directory, the synthetic folder
(PNGs with provenance, metadata.csv, manifest.json, npz) and the pixel formats they are written in."""

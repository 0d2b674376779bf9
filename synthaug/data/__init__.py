"""Real data and the datasets a user trains on: MedMNIST npz files or image folders, the training subsets of a run,
the unlabeled pool, the label-preserving symmetries, `SynthDataset` over a synthetic folder, and evaluate's arms as
datasets with the one batch drawing (arms.py), so that a user's own loop trains exactly an evaluated arm."""

"""Real data and the datasets a user trains on: MedMNIST npz files or image folders, the training subsets of a run,
the unlabeled pool, the label-preserving symmetries, and `SynthDataset` over a synthetic folder."""

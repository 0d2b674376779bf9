"""What synthetic images are judged against: a run's real reference images, nearest-image and feature-space
metrics, and the candidate filters built from them (near-copies, off-class images)."""

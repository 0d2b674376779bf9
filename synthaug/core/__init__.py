"""What every stage shares and owns nothing of the pipeline: the user-error type, devices and seeded generators,
Accelerate trackers, number formatting and figures as PNG bytes."""

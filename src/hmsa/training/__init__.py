"""Training: data sets and augmentation, and the one training loop used by teacher and student."""

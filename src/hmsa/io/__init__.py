"""Files: atomic writes (a reader sees the old content or the new, never half), and
image and label PNGs."""

"""Command-line tools: ``hmsa predict`` / ``hmsa serve``, the claims runner, the pipeline picture."""

"""Benchmarks (``make bench``): speed and memory figures, written to benchmarks.json.

Figures that compare two things are measured side by side in one run, because these
machines are shared and noisy: report ratios, not absolute times, where it matters.
"""

"""Spotcheck: decode sampled token rows back to audio, measure, and report."""

"""Versioned schemas of every artifact the pipeline persists; readers check the version."""

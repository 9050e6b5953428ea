"""Quality measures, filters, near-duplicates and splits of prepared audio."""

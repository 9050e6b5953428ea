"""Quality filters: one module per filter, all behind `base.QualityFilter`."""

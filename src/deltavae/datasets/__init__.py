"""placeholder, filled in by this change."""

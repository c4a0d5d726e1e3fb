"""Everything that touches SQLite or the media folder."""

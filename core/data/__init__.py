"""Captioned image collections: ingestion, validation, splitting and the prepared on-disk format."""

"""Widgets grouped by what the user sees; self-contained ones carry their own DEFAULT_CSS."""

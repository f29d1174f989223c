"""The app's screens, one module per screen (and its dialogs)."""

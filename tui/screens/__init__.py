"""The app's screens, one module per screen (and its dialogs); :mod:`tui.screens.registry` lists the top-level ones."""

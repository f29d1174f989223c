"""capsearch's terminal app (Textual): one client of the core."""

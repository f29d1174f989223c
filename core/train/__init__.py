"""Contrastive training and fine-tuning of open_clip models: losses, schedules, freezing, data, trainer,
WiSE-FT and the recommended fine-tuning recipe."""

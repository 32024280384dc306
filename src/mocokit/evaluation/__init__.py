"""Evaluation of pretrained encoders: pure functions over features, separate from feature extraction."""

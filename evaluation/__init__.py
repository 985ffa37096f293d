"""Evaluation: embedding, kNN, metrics, figures and reports of a trained (or untrained) model."""

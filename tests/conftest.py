"""Shared test settings: headless matplotlib and a fixed torch thread count."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")

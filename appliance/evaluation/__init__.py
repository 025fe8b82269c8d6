"""Held-out evaluation: per-stage examples with ground truth from real commits, metrics,
and the statistical gate that decides whether a candidate adapter may be promoted."""

"""Serving: the model pool every model call goes through, GPU placement, the call log."""

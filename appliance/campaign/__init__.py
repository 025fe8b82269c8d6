"""Campaigns: run the stages on every usable commit of a package, grade the edits in the
sandbox, and record training triples and the synthetic pairs each real commit implies."""

"""Per-stage training datasets (SFT and DPO) built from campaign triples and the real
commits' synthetic pairs; versions accumulate, quality gates decide what may be trained."""

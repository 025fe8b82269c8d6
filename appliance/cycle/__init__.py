"""`forge cycle`: one whole loop in the foreground — ingest → campaign → datasets → train
→ evaluate → promote or reject → a report. `loop` holds the steps, `profile` the settings
of the quick demo run."""

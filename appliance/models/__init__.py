"""Base models: models/models.toml, the record of which GGUF files Forge serves."""

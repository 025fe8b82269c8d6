"""Training adapters for a base model: dataset building, the trainer, export to GGUF."""

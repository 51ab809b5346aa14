"""The model under test: loading a checkpoint (+ LoRA) and seeded generation."""

"""Manifests: the TOML contract (load, validate) and paraphrased canary prompts."""

"""vmf_embeddings: one Hydra runner for hyperspherical and prototype embedding learning."""

__version__ = "0.1.0"

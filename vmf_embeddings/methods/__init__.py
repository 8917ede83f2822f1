"""Loss heads. Each implements `vmf_embeddings.methods.base.Method`; configs pick one by `_target_`."""

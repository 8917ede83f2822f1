"""Backbones: nn.Modules mapping an image batch to N x embedding_dim embeddings f(x).

Everything class-related (class weights, temperature, prototypes) lives in the method head
(`vmf_embeddings.methods`), so any backbone works with any method.
"""

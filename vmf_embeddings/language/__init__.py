"""Word-analogy tools for the spherization layer (Kim & Kim, NeurIPS 2022, Tables 3/7).

- `vmf_embeddings.language.spherized_bert`: spherize the last encoder layer of a transformers `BertForMaskedLM` /
  `RobertaForMaskedLM`, and save / reload such a model.
- `vmf_embeddings.language.analogy`: the S_ppl / S_pmi / S_mppl analogy scorers of Ushio et al. (ACL 2021) and a
  loader for their jsonl analogy sets (SAT, U2, U4, Google, BATS).

Both need the `transformers` package (in requirements.txt); nothing here is imported by the experiment runner, so
the rest of the project works without it. Scripts: `scripts/train_mlm.py`, `scripts/word_analogy.py`.
"""

__all__ = ["analogy", "spherized_bert"]

"""The vMF original's `arch.params.*` command-line keys, mapped onto today's config in this one place.

The original put method facts on the backbone (`arch.params.use_vmf=True arch.params.learn_temp=True
arch.params.init_temp=-2.773 arch.params.kappa_confidence=0.7 arch.params.n_classes=83`). Here a
backbone option holds backbone keys only; conf/config.yaml declares these five keys as null, so the
original's commands still parse, and `apply_legacy_keys` maps the ones given:

- `init_temp`, `learn_temp`, `kappa_confidence` -> `method.params.<key>` (refused if the method has no such
  parameter, e.g. `learn_temp` on a method without temperature);
- `use_vmf`, `n_classes` restate facts (the method is vMF; the dataset's training classes) and are only
  checked against them.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf, open_dict

from vmf_embeddings.errors import ConfigError

MAPPED = ("init_temp", "learn_temp", "kappa_confidence")
CHECKED = ("use_vmf", "n_classes")
LEGACY_KEYS = MAPPED + CHECKED


def apply_legacy_keys(cfg: DictConfig) -> None:
    """Map / check the legacy `arch.params` keys in place (idempotent); one-line ConfigError on a conflict."""
    params = cfg.arch.params
    method = cfg.method
    use_vmf = OmegaConf.select(params, "use_vmf", default=None)
    if use_vmf is not None and bool(use_vmf) != bool(method.get("uses_vmf", False)):
        wanted = "method=vmf_softmax" if use_vmf else "arch.params.use_vmf=false (or drop it)"
        raise ConfigError(f"arch.params.use_vmf={bool(use_vmf)} does not match method={method.name}; use {wanted}")
    n_classes = OmegaConf.select(params, "n_classes", default=None)
    if n_classes is not None and int(n_classes) != int(cfg.dataset.n_train_classes):
        raise ConfigError(
            f"arch.params.n_classes={n_classes} but dataset={cfg.dataset.name} trains on "
            f"{cfg.dataset.n_train_classes} classes; set arch.params.n_classes={cfg.dataset.n_train_classes} or drop it"
        )
    method_params = method.get("params") or {}
    for key in MAPPED:
        value = OmegaConf.select(params, key, default=None)
        if value is None:
            continue
        if key not in method_params:
            if key == "learn_temp" and not value:
                continue  # "no learnt temperature" holds for a method without one
            raise ConfigError(
                f"arch.params.{key}={value} but method={method.name} has no '{key}' parameter; drop the override"
            )
        with open_dict(method):
            method.params[key] = value

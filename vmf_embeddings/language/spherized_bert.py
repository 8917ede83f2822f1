"""Spherize the last encoder layer of a transformers BERT / RoBERTa masked LM (Kim & Kim, NeurIPS 2022, word analogy).

The paper spherizes only the *last* encoder layer of BERT-large / RoBERTa-large: that layer's feed-forward block
drops its GELU, so the intermediate pre-activation z (intermediate_size = n wide) goes through
Spherization(n -> n + 1) and then a bias-free Linear(n + 1, hidden_size); dropout and the residual LayerNorm follow
as usual. `spherize_last_layer` does exactly that on an existing `BertForMaskedLM` or `RobertaForMaskedLM` (any
config) by replacing two attributes of the last layer, duck-typed so it works with every transformers version that
has the usual layout (4.40 ... 5.x; `BertIntermediate`/`BertOutput`, and `RobertaIntermediate`/`RobertaOutput`, which
are copies of them):

    layer.intermediate.intermediate_act_fn  -> nn.Identity()
    layer.output.dense                      -> SphericalLinear(n, hidden_size)   (Spherization + Linear, no bias)

Nothing else changes: earlier layers, attention, the LM head and the tied embeddings stay as they are. The new
bias-free Linear starts from N(0, config.initializer_range), as transformers' `_init_weights` initialises the layer
in the original (its `SphBertForMaskedLM.from_pretrained` leaves the new keys to `_init_weights`); with pretrained
weights the replaced `output.dense` weights are dropped, as there. The spherization settings are stored in
`model.config.spherization`, so `save_pretrained` writes them to config.json and `load_masked_lm` rebuilds the
spherized layer before loading the weights.

Departures from the released code (GIST-IRR/spherization_layer, models/sphbert.py, models/sphroberta.py): it
cannot run as released (`SphBertOutput`/`SphRobertaOutput` pass an undefined `lrable`, a NameError, and it imports
`BertIntermediate` etc. from the top level of `transformers`, which needs a patched transformers); this module does
neither and works with a stock `transformers>=4.40`. The Spherization itself is `vmf_embeddings.layers.spherization`
(exact form, O(n) instead of the original's two dense (n+1)^2 buffers; see that module). Defaults are the paper's
runs: s = r = 5, scaling learnable and radius fixed ("lrable TF"), delta = 1e-6 (the training scripts' own defaults
were s = r = 1, "FF").
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from vmf_embeddings.errors import CheckpointError, ConfigError, WeightsUnavailableError
from vmf_embeddings.layers.spherization import SphericalLinear, Spherization

CONFIG_KEY = "spherization"  # model.config attribute (and config.json key) holding the settings
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


# -- the layer surgery ----------------------------------------------------------------------------------------------
def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's layer list of a BERT-like model (`model.base_model.encoder.layer`)."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ConfigError(f"spherize: {type(model).__name__} has no `base_model.encoder.layer` list; only BERT-like "
                          f"masked LMs (BertForMaskedLM, RobertaForMaskedLM) can be spherized")
    return layers


def _ffn_parts(layer: nn.Module):
    inter, out = getattr(layer, "intermediate", None), getattr(layer, "output", None)
    if inter is None or out is None or not hasattr(inter, "intermediate_act_fn") or not hasattr(out, "dense"):
        raise ConfigError(f"spherize: encoder layer {type(layer).__name__} lacks intermediate.intermediate_act_fn / "
                          f"output.dense (the BertIntermediate / BertOutput layout)")
    return inter, out


def spherization_of(model: nn.Module) -> Optional[Spherization]:
    """The Spherization of the spherized last layer, or None if the model is not spherized."""
    try:
        _, out = _ffn_parts(encoder_layers(model)[-1])
    except ConfigError:
        return None
    return out.dense.spherize if isinstance(out.dense, SphericalLinear) else None


def is_spherized(model: nn.Module) -> bool:
    return spherization_of(model) is not None


def spherize_last_layer(model: nn.Module, scaling: float = 5.0, radius: float = 5.0, learn_scaling: bool = True,
                        learn_radius: bool = False, delta: float = 1e-6) -> nn.Module:
    """Spherize the FFN of the last encoder layer in place (see the module docstring); returns `model`."""
    inter, out = _ffn_parts(encoder_layers(model)[-1])
    if isinstance(out.dense, SphericalLinear):
        raise ConfigError("spherize: the last encoder layer is already spherized")
    dense = out.dense
    if not isinstance(dense, nn.Linear):
        raise ConfigError(f"spherize: last layer's output.dense is {type(dense).__name__}, expected nn.Linear")
    settings = {"scaling": float(scaling), "radius": float(radius), "learn_scaling": bool(learn_scaling),
                "learn_radius": bool(learn_radius), "delta": float(delta)}
    sph = SphericalLinear(dense.in_features, dense.out_features, **settings)  # validates delta, radius
    std = float(getattr(getattr(model, "config", None), "initializer_range", 0.02))
    with torch.no_grad():
        sph.linear.weight.normal_(0.0, std)
    sph.to(device=dense.weight.device, dtype=dense.weight.dtype)
    inter.intermediate_act_fn = nn.Identity()
    out.dense = sph
    if getattr(model, "config", None) is not None:
        setattr(model.config, CONFIG_KEY, dict(settings))
    return model


def spherization_settings(config: Any) -> Optional[Dict[str, Any]]:
    """The settings stored by `spherize_last_layer` in a (transformers) config, or None."""
    settings = getattr(config, CONFIG_KEY, None)
    if settings is None:
        return None
    if not isinstance(settings, dict):
        raise CheckpointError(f"config.json key {CONFIG_KEY!r} must be a mapping, got {settings!r}")
    allowed = {"scaling", "radius", "learn_scaling", "learn_radius", "delta"}
    return {k: v for k, v in settings.items() if k in allowed}


# -- loading and saving ---------------------------------------------------------------------------------------------
def _looks_like_path(name: str) -> bool:
    """A local path rather than a hub name ("bert-large-cased", "org/name")."""
    return name.startswith((".", "~", "/")) or name.count("/") > 1 or "\\" in name


def _unavailable(name: str, exc: BaseException) -> WeightsUnavailableError:
    reason = " ".join(str(exc).split())[:160] or type(exc).__name__
    return WeightsUnavailableError(
        f"cannot load model {name!r} ({reason}): it is not a local model directory and could not be fetched "
        f"(no internet?). Download it on a machine with internet (`huggingface-cli download {name} --local-dir "
        f"DIR`, or `AutoModelForMaskedLM.from_pretrained(name).save_pretrained(DIR)` plus the tokenizer), copy DIR "
        f"here and pass its local path")


def _check_source(name_or_path: Union[str, Path]) -> str:
    src = str(name_or_path)
    path = Path(src).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise WeightsUnavailableError(f"model {src!r}: not a model directory (expected a folder with config.json "
                                          f"written by save_pretrained / huggingface-cli download)")
        return str(path)
    if isinstance(name_or_path, Path) or _looks_like_path(src):
        raise WeightsUnavailableError(f"model path {src!r} does not exist: download the model on a machine with "
                                      f"internet (`huggingface-cli download NAME --local-dir DIR`), copy DIR here "
                                      f"and pass its local path")
    return src


def load_config(name_or_path: Union[str, Path]):
    from transformers import AutoConfig

    src = _check_source(name_or_path)
    try:
        return AutoConfig.from_pretrained(src)
    except Exception as exc:  # noqa: BLE001 - OSError, HF hub errors, ValueError: all mean "cannot load"
        raise _unavailable(src, exc) from None


def load_tokenizer(name_or_path: Union[str, Path]):
    from transformers import AutoTokenizer

    src = _check_source(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(src)
    except Exception as exc:  # noqa: BLE001
        raise _unavailable(src, exc) from None
    if tok.mask_token_id is None:
        raise ConfigError(f"tokenizer of {src!r} has no mask token; a masked-LM tokenizer is needed")
    return tok


def _read_state_dict(directory: Path) -> Dict[str, torch.Tensor]:
    def load(file: Path) -> Dict[str, torch.Tensor]:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file))
        return torch.load(str(file), map_location="cpu", weights_only=True)

    for name in _WEIGHT_FILES:
        file = directory / name
        if not file.is_file():
            continue
        if name.endswith(".index.json"):
            shards = sorted(set(json.loads(file.read_text())["weight_map"].values()))
            state: Dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load(directory / shard))
            return state
        return load(file)
    raise CheckpointError(f"{directory}: no model weights ({' / '.join(_WEIGHT_FILES)}); re-save the model with "
                          f"save_pretrained")


def _load_weights(model: nn.Module, directory: Path) -> None:
    """Load a save_pretrained state dict, tolerating only the tied duplicates save_pretrained leaves out."""
    state = _read_state_dict(directory)
    result = model.load_state_dict(state, strict=False)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    own = model.state_dict(keep_vars=True)
    loaded_ptrs = {own[k].data_ptr() for k in state if k in own}
    missing = [k for k in result.missing_keys if own[k].data_ptr() not in loaded_ptrs]
    unexpected = [k for k in result.unexpected_keys if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(f"{directory}: weights do not match the (spherized) architecture in its config.json: "
                              f"missing {missing[:4]}, unexpected {unexpected[:4]}; was it saved by a different "
                              f"model class or spherization setting?")


def load_masked_lm(name_or_path: Union[str, Path], from_scratch: bool = False) -> nn.Module:
    """A masked LM from a local directory (or a hub name, when reachable); spherized if its config says so.

    `from_scratch`: only the config is read and the weights are random (the paper's `--empty` runs). A directory
    written by `save_pretrained` after `spherize_last_layer` carries `spherization` in config.json: the model is
    rebuilt, spherized with those settings, then its weights are loaded (strictly, up to tied duplicates).
    """
    from transformers import AutoModelForMaskedLM

    config = load_config(name_or_path)
    settings = spherization_settings(config)
    src = _check_source(name_or_path)
    try:
        if from_scratch or settings is not None:
            model = AutoModelForMaskedLM.from_config(config)
        else:
            model = AutoModelForMaskedLM.from_pretrained(src)
    except (OSError, ValueError) as exc:
        raise _unavailable(src, exc) from None
    if settings is not None:
        spherize_last_layer(model, **settings)
        if not from_scratch:
            if not Path(src).is_dir():
                raise WeightsUnavailableError(f"spherized model {src!r}: pass the local directory it was saved to")
            _load_weights(model, Path(src))
    model.eval()
    return model


def save_pretrained_atomic(model: nn.Module, tokenizer, out_dir: Union[str, Path],
                           extra: Optional[Dict[str, str]] = None) -> Path:
    """model.save_pretrained + tokenizer.save_pretrained (+ `extra` text files, name -> content) into `out_dir`,
    written to a temporary sibling that replaces `out_dir` only once everything is written."""
    out = Path(out_dir).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary directory
    try:
        model.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


__all__ = ["CONFIG_KEY", "encoder_layers", "spherization_of", "is_spherized", "spherize_last_layer",
           "spherization_settings", "load_config", "load_tokenizer", "load_masked_lm", "save_pretrained_atomic"]

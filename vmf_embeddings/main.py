"""The single entry point: `python -m vmf_embeddings.main [overrides]` (add -m for sweeps).

Composes conf/config.yaml (groups mode, dataset, arch, method, sampler, optional experiment), validates
the combination, then trains (mode=train) or extracts embeddings (mode=get_embeddings) in the run dir
`runs/<dataset>/<method>/<dim>dim/<name>/`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from vmf_embeddings.errors import UserError
from vmf_embeddings.rundir import register_resolvers
from vmf_embeddings.validate import validate

log = logging.getLogger("vmf_embeddings")

register_resolvers()


def run(cfg: DictConfig, run_dir: Path) -> Optional[float]:
    """Dispatch on mode; callable without Hydra's decorator (tests use the compose API)."""
    validate(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.mode.name == "train":
        from vmf_embeddings.train import train

        log.info("run dir %s\n%s", run_dir, OmegaConf.to_yaml(cfg, resolve=True))
        return train(cfg, run_dir)
    from vmf_embeddings.extract import extract

    extract(cfg, run_dir)
    return None


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> Optional[float]:
    try:
        return run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except UserError as error:
        # One line, no traceback: the message names the key or file and the fix.
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

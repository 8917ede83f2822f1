"""The one input type of the metric functions: NumPy arrays or torch tensors (any device, any dtype)."""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]


def to_numpy(x: Array, dtype: Optional[np.dtype] = None) -> np.ndarray:
    """A host NumPy view/copy of `x` (detached, on the CPU), cast to `dtype` when given."""
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return array if dtype is None else array.astype(dtype, copy=False)

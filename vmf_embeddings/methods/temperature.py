"""The learnable (or fixed) softmax temperature shared by the spherical heads."""

from __future__ import annotations

import torch
from torch import nn


class TemperatureMixin(nn.Module):
    """Holds `temp` = log T, so beta = 1/T = exp(-temp) stays positive without constraints.

    With learn_temp=False the temperature is a fixed buffer (a fixed-beta cosine softmax is a valid
    configuration the original could not express: it asserted a learned `temp`).
    """

    def _init_temperature(self, init_temp: float, learn_temp: bool) -> None:
        value = torch.tensor(float(init_temp))
        if learn_temp:
            self.temp = nn.Parameter(value)
        else:
            self.register_buffer("temp", value)

    @property
    def beta(self) -> torch.Tensor:
        return torch.exp(-self.temp)

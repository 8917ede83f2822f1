"""scripts/profile_step.py: every phase of a real training step gets a share, and the shares add up."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "profile_step.py"


def test_profile_prints_every_phase(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("profile_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["profile_step.py", "--steps", "3", "--warmup", "1", "device=cpu",
                                      "method=vmf_softmax"])
    module.main()
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^(data|forward|loss|backward|optimizer)\s+([\d.]+)\s", out, re.M))
    assert set(rows) == set(module.PHASES) and float(rows["forward"]) > 0 and float(rows["backward"]) > 0
    shares = [float(s) for s in re.findall(r"^(?:data|forward|loss|backward|optimizer)\s+[\d.]+\s+([\d.]+)%", out, re.M)]
    assert abs(sum(shares) - 100) < 0.5 and "method=vmf_softmax" in out

#!/usr/bin/env python3
"""Reference learning rates for rnn-optim's LinearLr, CosineAnnealingLr and SequentialLr.

Writes crates/rnn-optim/tests/fixtures/schedules_chained.json, read by
crates/rnn-optim/tests/torch_parity.rs (`chained_schedules_match_torch`).

Each case builds torch.optim.SGD on one parameter with the base learning rate, then the
scheduler(s), and records the optimizer's learning rate after construction (t = 0) and after
each of STEPS calls of scheduler.step() (t = 1..STEPS), as the hex of each double's bits. The
cosine cases run past T_max, where torch's cosine rises again, to cover that branch too.

Usage: python3 tools/gen_schedule_fixtures.py   (torch 2.x)
"""

import json
import os
import struct
import warnings

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

STEPS = 30
OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "rnn-optim", "tests", "fixtures")


def lrs(base_lr, build):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    sched = build(opt)
    out = [opt.param_groups[0]["lr"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(STEPS):
            opt.step()
            sched.step()
            out.append(opt.param_groups[0]["lr"])
    # The bits as 16 hex digits each: a JSON decimal may not parse back to the same double.
    return [struct.pack(">d", float(x)).hex() for x in out]


def main():
    cases = []
    for base, s, e, n in [(0.1, 1 / 3, 1.0, 5), (2e-3, 0.25, 1.0, 4), (2e-3, 0.01, 1.0, 17), (0.5, 1.0, 0.1, 7)]:
        cases.append({"schedule": "linear", "base_lr": base,
                      "config": {"start_factor": s, "end_factor": e, "total_iters": n},
                      "lrs": lrs(base, lambda o: LinearLR(o, start_factor=s, end_factor=e, total_iters=n))})
    for base, t_max, eta in [(0.1, 10, 0.0), (2e-3, 7, 1e-4), (0.05, 3, 0.01), (2e-3, 29, 2e-5)]:
        cases.append({"schedule": "cosine", "base_lr": base, "config": {"t_max": t_max, "eta_min": eta},
                      "lrs": lrs(base, lambda o: CosineAnnealingLR(o, T_max=t_max, eta_min=eta))})
    for base, s, w, t_max, eta in [(0.1, 0.1, 5, 15, 1e-4), (2e-3, 1 / 3, 3, 8, 0.0), (2e-3, 0.01, 10, 20, 2e-5)]:
        def build(o):
            warm = LinearLR(o, start_factor=s, end_factor=1.0, total_iters=w)
            cos = CosineAnnealingLR(o, T_max=t_max, eta_min=eta)
            return SequentialLR(o, [warm, cos], milestones=[w])
        cases.append({"schedule": "warmup_cosine", "base_lr": base,
                      "config": {"start_factor": s, "warmup": w, "t_max": t_max, "eta_min": eta},
                      "lrs": lrs(base, build)})
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "schedules_chained.json")
    with open(path, "w") as f:
        json.dump({"torch": torch.__version__, "steps": STEPS, "cases": cases}, f, separators=(",", ":"))
    print(f"wrote {path}: {len(cases)} cases")


if __name__ == "__main__":
    main()

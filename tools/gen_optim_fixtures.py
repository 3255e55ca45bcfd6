#!/usr/bin/env python3
"""Reference trajectories for the optimizers, clipping modes and schedules of rnn-optim.

Writes small JSON files into crates/rnn-optim/tests/fixtures/, read by
crates/rnn-optim/tests/torch_parity.rs.

Every optimizer case runs torch.optim.<X>(foreach=False, i.e. the single-tensor code path) in
float64 for STEPS steps on one fixed, seeded sequence of gradients over three tensors of different
shapes, and records the parameters after every step. The gradients do not depend on the
parameters, so the Rust side can replay them exactly. About 10% of the gradient entries are
exactly zero, which exercises Rprop's "sign(0)" branch.

BasicRprop (the counting-ones tutorial's sign rule) has no torch counterpart; its reference is
the plain-Python implementation `basic_rprop_reference` below, written independently of the Rust
code. Per-parameter norm clipping (the seed solver's rule) likewise comes from numpy.

Tensors are written flattened in row-major order together with their shape; every rule tested
here is elementwise or a norm, so the flat order does not matter to the Rust side.

Usage: python3 tools/gen_optim_fixtures.py   (torch 2.x, numpy)
"""

import json
import math
import os

import numpy as np
import torch

STEPS = 20
SHAPES = {"weight_ih_l0": (4, 3), "bias_ih_l0": (5,), "head.weight": (2, 3)}
OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "rnn-optim", "tests", "fixtures")

torch.set_default_dtype(torch.float64)


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def make_problem(seed, scale=1.0):
    """Initial parameters and STEPS gradient sets, ~10% of gradient entries exactly zero."""
    g = torch.Generator().manual_seed(seed)
    params0 = {n: torch.randn(s, generator=g) for n, s in SHAPES.items()}
    grads = []
    for _ in range(STEPS):
        step = {}
        for n, s in SHAPES.items():
            x = torch.randn(s, generator=g) * scale
            mask = torch.rand(s, generator=g) < 0.1
            x[mask] = 0.0
            step[n] = x
        grads.append(step)
    return params0, grads


def run_torch(cls, kwargs, params0, grads):
    params = {n: p.clone().requires_grad_(True) for n, p in params0.items()}
    opt = cls(list(params.values()), foreach=False, **kwargs)
    traj = []
    for step in grads:
        for n, p in params.items():
            p.grad = step[n].clone()
        opt.step()
        traj.append({n: flat(p) for n, p in params.items()})
    return traj


def basic_rprop_reference(params0, grads, initial_step, eta_plus, eta_minus):
    """The tutorial's rule, elementwise, in plain Python floats."""
    w = {n: flat(p) for n, p in params0.items()}
    delta = {n: [initial_step] * len(v) for n, v in w.items()}
    prev = {n: [0.0] * len(v) for n, v in w.items()}
    traj = []
    for step in grads:
        for n in w:
            g = flat(step[n])
            for i, gi in enumerate(g):
                s = (gi > 0) - (gi < 0)
                delta[n][i] = delta[n][i] * (eta_plus if s == prev[n][i] else eta_minus)
                prev[n][i] = s
                w[n][i] = w[n][i] - s * delta[n][i]
        traj.append({n: list(v) for n, v in w.items()})
    return traj


def problem_json(params0, grads):
    return {
        "shapes": {n: list(s) for n, s in SHAPES.items()},
        "params0": {n: flat(p) for n, p in params0.items()},
        "grads": [{n: flat(t) for n, t in step.items()} for step in grads],
    }


def write(name, obj):
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.normpath(path)} ({os.path.getsize(path)} bytes)")


# name, torch class, seed, list of (case name, kwargs as passed to torch)
OPTIMIZERS = [
    ("sgd", torch.optim.SGD, 1, [
        ("plain", {"lr": 0.1}),
        ("momentum", {"lr": 0.05, "momentum": 0.9}),
        ("dampening", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}),
        ("nesterov", {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
        ("weight_decay", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1}),
    ]),
    ("rprop", torch.optim.Rprop, 2, [
        ("defaults", {}),
        ("clamped", {"lr": 0.05, "etas": [0.3, 1.5], "step_sizes": [1e-3, 0.1]}),
    ]),
    ("adam", torch.optim.Adam, 3, [
        ("plain", {"lr": 0.01}),
        ("amsgrad", {"lr": 0.01, "amsgrad": True}),
        ("weight_decay", {"lr": 0.01, "weight_decay": 0.1}),
        ("all", {"lr": 0.02, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.05,
                 "amsgrad": True}),
    ]),
    ("adamw", torch.optim.AdamW, 4, [
        ("defaults", {"lr": 0.01}),
        ("amsgrad", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    ]),
    ("rmsprop", torch.optim.RMSprop, 5, [
        ("plain", {"lr": 0.01}),
        ("momentum", {"lr": 0.01, "momentum": 0.9}),
        ("centered", {"lr": 0.01, "centered": True}),
        ("all", {"lr": 0.005, "alpha": 0.9, "eps": 1e-6, "momentum": 0.5, "centered": True,
                 "weight_decay": 0.1}),
    ]),
    ("adagrad", torch.optim.Adagrad, 6, [
        ("defaults", {}),
        ("lr_decay", {"lr": 0.1, "lr_decay": 0.1}),
        ("accumulator", {"lr": 0.1, "initial_accumulator_value": 0.5, "eps": 1e-6,
                         "weight_decay": 0.1}),
    ]),
]


def tuples(kwargs):
    """JSON has no tuples; torch wants them for etas, step_sizes and betas."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def main():
    for name, cls, seed, cases in OPTIMIZERS:
        params0, grads = make_problem(seed)
        out = problem_json(params0, grads)
        out["torch"] = torch.__version__
        out["cases"] = [
            {"name": case, "config": kwargs, "params": run_torch(cls, tuples(kwargs), params0, grads)}
            for case, kwargs in cases
        ]
        write(f"{name}.json", out)

    params0, grads = make_problem(7)
    out = problem_json(params0, grads)
    out["reference"] = "basic_rprop_reference in tools/gen_optim_fixtures.py (plain Python)"
    out["cases"] = [
        {"name": case, "config": cfg, "params": basic_rprop_reference(params0, grads, **cfg)}
        for case, cfg in [
            ("tutorial", {"initial_step": 0.001, "eta_plus": 1.2, "eta_minus": 0.5}),
            ("other", {"initial_step": 0.01, "eta_plus": 1.5, "eta_minus": 0.3}),
        ]
    ]
    write("basic_rprop.json", out)

    # Clipping: each case clips every gradient set of the sequence independently.
    _, grads = make_problem(8, scale=3.0)
    clip_cases = []
    # 13 splits the 20 total norms (9.9 to 18.1); 100 is above all of them (scale clamped to 1)
    for max_norm in [1.0, 13.0, 100.0]:
        norms, clipped = [], []
        for step in grads:
            ps = {n: torch.zeros_like(t).requires_grad_(True) for n, t in step.items()}
            for n, p in ps.items():
                p.grad = step[n].clone()
            total = torch.nn.utils.clip_grad_norm_(list(ps.values()), max_norm, foreach=False)
            norms.append(float(total))
            clipped.append({n: flat(p.grad) for n, p in ps.items()})
        clip_cases.append({"mode": "global_norm", "max": max_norm, "norms": norms,
                           "clipped": clipped})
    for max_norm in [1.0, 6.0]:  # 6 splits the per-tensor norms
        clipped = []
        for step in grads:
            out_step = {}
            for n, t in step.items():
                g = t.numpy().reshape(-1).astype(np.float64)
                norm = math.sqrt(float(np.sum(g * g)))
                if norm > max_norm:
                    g = g * (max_norm / norm)
                out_step[n] = [float(x) for x in g]
            clipped.append(out_step)
        clip_cases.append({"mode": "per_param_norm", "max": max_norm, "clipped": clipped,
                           "reference": "numpy: g *= max/||g|| where ||g|| > max"})
    for clip_value in [5.0, 1.0]:
        clipped = []
        for step in grads:
            ps = {n: torch.zeros_like(t).requires_grad_(True) for n, t in step.items()}
            for n, p in ps.items():
                p.grad = step[n].clone()
            torch.nn.utils.clip_grad_value_(list(ps.values()), clip_value, foreach=False)
            clipped.append({n: flat(p.grad) for n, p in ps.items()})
        clip_cases.append({"mode": "value", "max": clip_value, "clipped": clipped})
    write("clip.json", {"torch": torch.__version__, "shapes": {n: list(s) for n, s in SHAPES.items()},
                        "grads": [{n: flat(t) for n, t in s.items()} for s in grads],
                        "cases": clip_cases})

    # Schedules: the lr after each scheduler.step(), epochs 0..=STEPS.
    sched_cases = []
    for name, make, kwargs in [
        ("exponential", torch.optim.lr_scheduler.ExponentialLR, {"gamma": 0.99}),
        ("exponential", torch.optim.lr_scheduler.ExponentialLR, {"gamma": 0.7}),
        ("step", torch.optim.lr_scheduler.StepLR, {"step_size": 3, "gamma": 0.5}),
        ("step", torch.optim.lr_scheduler.StepLR, {"step_size": 1, "gamma": 0.9}),
    ]:
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=0.1)
        sched = make(opt, **kwargs)
        lrs = [opt.param_groups[0]["lr"]]
        for _ in range(STEPS):
            opt.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        sched_cases.append({"schedule": name, "base_lr": 0.1, "config": kwargs, "lrs": lrs})
    write("schedules.json", {"torch": torch.__version__, "cases": sched_cases})


if __name__ == "__main__":
    main()

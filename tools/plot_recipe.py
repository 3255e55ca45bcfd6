#!/usr/bin/env python3
"""The curve of docs/04's 30-minute recipe: validation loss against wall time, charlm's run and
PyTorch's default setup side by side.

    python3 tools/plot_recipe.py CHARLM_LOG TORCH_LOG OUT.png [TITLE]

CHARLM_LOG is what `charlm train` printed (its lines `step S/N epoch E, M min: train loss X,
validation loss V`); TORCH_LOG is what `tools/torch_charlm_timed.py` printed (its lines
`step S minutes M train X validation V best B`). Needs matplotlib (`pip install matplotlib`).
"""
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

if len(sys.argv) < 4:
    sys.exit("usage: plot_recipe.py CHARLM_LOG TORCH_LOG OUT.png [TITLE]")
ours_re = re.compile(r"^step (\d+)/\d+ epoch [\d.]+, ([\d.]+) min: train loss [\d.]+, validation loss ([\d.]+)")
torch_re = re.compile(r"^step (\d+) minutes ([\d.]+) train [\d.]+ validation ([\d.]+)")


def read(path, pattern):
    points = []
    with open(path, encoding="utf-8") as f:
        for line in f.read().replace("\r", "\n").splitlines():
            m = pattern.match(line.strip())
            if m:
                points.append((float(m.group(2)), float(m.group(3))))
    if not points:
        sys.exit(f"{path}: no validation lines found")
    return points


ours = read(sys.argv[1], ours_re)
torch = read(sys.argv[2], torch_re)
fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
labels = [
    "charlm, the recipe (108 streams, each warmed up)",
    "PyTorch, default setup (2x256 LSTM; 50 cold streams)",
]
for points, label in zip([ours, torch], labels):
    best = min(v for _, v in points)
    ax.plot([m for m, _ in points], [v for _, v in points], marker="o", markersize=3,
            label=f"{label}: best {best:.4f}")
ax.axhline(1.45, color="gray", linestyle="--", linewidth=1, label="1.45 nats/char")
ax.set_xlabel("wall time (minutes, validations included)")
ax.set_ylabel("validation loss (nats/char)")
ax.set_ylim(1.3, 2.2)
ax.set_xlim(0, 31)
ax.grid(alpha=0.3)
ax.legend()
if len(sys.argv) > 4:
    ax.set_title(sys.argv[4], fontsize=10)
fig.tight_layout()
fig.savefig(sys.argv[3])
print(f"wrote {sys.argv[3]}")

#!/usr/bin/env python3
"""Reference trajectory of PyTorch's AdamW for `crates/adept-train/tests/adamw.rs`.

Writes `tests/fixtures/adamw_expected.json`: three small parameters in two groups with different
learning rates, the gradient each gets at each of 5 steps, and the parameters after every step, as
`torch.optim.AdamW` computes them with the project's settings (betas (0.9, 0.98), eps 1e-6) and a
non-zero weight decay (0.1; the project trains with 0, but the code path must still be right).

Two schedules over the same gradients:
* `constant`: every step at the groups' peak rates (lr_scale 1);
* `linear`: `torch.optim.lr_scheduler.LambdaLR` with the factor of
  `transformers.get_linear_schedule_with_warmup` (warm-up 2 steps, 6 in all), stepped after each
  optimiser step, the way the project's trainer passes `linear_schedule(step, warmup, total)` for
  the 0-based step it is about to take (so step 1 has factor 0: moments move, parameters do not).

Initial values and gradients are float32 numbers (what the Rust side holds); PyTorch runs in
float64 so the fixture is the exact update to far below float32 rounding, and the Rust test's
tolerance only has to cover its own float32 arithmetic. The same run in float32 is also done and
its largest deviation from float64 recorded (`torch_float32_max_abs_deviation`), to show the size
of float32 rounding.

Run once (a dev step; needs `pip install torch`), then commit the JSON:
    python3 tests/reference/adamw_reference.py
"""
import json
import pathlib
import re

import numpy as np
import torch

BETAS = (0.9, 0.98)
EPS = 1e-6
WEIGHT_DECAY = 0.1
STEPS = 5
WARMUP, TOTAL = 2, 6
GROUPS = [("prompt", 0.3, ["p"]), ("offsets", 1e-2, ["w", "b"])]
SHAPES = {"p": [2, 3], "w": [3], "b": [2, 2]}

OUT = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "adamw_expected.json"


def f32(x):
    """Rounds to float32 and returns Python floats (exact in JSON and in Rust's f64 → f32)."""
    return [float(v) for v in np.asarray(x, dtype=np.float32).ravel()]


def linear_factor(step):
    """transformers.get_linear_schedule_with_warmup's lr_lambda."""
    if step < WARMUP:
        return step / max(1, WARMUP)
    return max(0.0, (TOTAL - step) / max(1, TOTAL - WARMUP))


def make_data():
    rng = np.random.default_rng(20250101)
    initial = {n: f32(rng.uniform(-1.5, 1.5, size=s)) for n, s in SHAPES.items()}
    grads = []
    for step in range(STEPS):
        g = {n: rng.normal(0.0, 1.0, size=int(np.prod(s))) for n, s in SHAPES.items()}
        # Sizes where eps matters (|g| ~ eps), an exact zero, and a large gradient, so a misplaced
        # eps or bias correction shows.
        g["p"][0] = 3e-7 * (1 if step % 2 == 0 else -1)
        g["p"][1] = 2e-6
        g["w"][0] = 0.0 if step < 2 else 0.5
        g["b"][3] = 40.0 * (-1) ** step
        grads.append({n: f32(v) for n, v in g.items()})
    return initial, grads


def run(initial, grads, dtype, schedule):
    params = {n: torch.tensor(initial[n], dtype=dtype).reshape(SHAPES[n]) for n in SHAPES}
    for p in params.values():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(
        [{"params": [params[n] for n in names], "lr": lr} for _, lr, names in GROUPS],
        betas=BETAS,
        eps=EPS,
        weight_decay=WEIGHT_DECAY,
        amsgrad=False,
        foreach=False,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, linear_factor if schedule == "linear" else (lambda step: 1.0)
    )
    scales, after = [], []
    for step in range(STEPS):
        scales.append(opt.param_groups[0]["lr"] / GROUPS[0][1])
        for n, p in params.items():
            p.grad = torch.tensor(grads[step][n], dtype=dtype).reshape(SHAPES[n])
        opt.step()
        sched.step()
        after.append({n: [float(v) for v in p.detach().reshape(-1).tolist()] for n, p in params.items()})
    return scales, after


def main():
    initial, grads = make_data()
    schedules = []
    worst32 = 0.0
    for name in ["constant", "linear"]:
        scales, after64 = run(initial, grads, torch.float64, name)
        _, after32 = run(initial, grads, torch.float32, name)
        for a, b in zip(after64, after32):
            for n in SHAPES:
                worst32 = max(worst32, max(abs(x - y) for x, y in zip(a[n], b[n])))
        schedules.append(
            {
                "name": name,
                "lr_scale": scales,
                # Rounded to 12 significant digits: far below float32 resolution, keeps it small.
                "params_after_step": [
                    {n: [float(f"{v:.12g}") for v in s[n]] for n in SHAPES} for s in after64
                ],
            }
        )
    fixture = {
        "generator": "tests/reference/adamw_reference.py",
        "torch_version": torch.__version__.split("+")[0],
        "dtype": "float64",
        "betas": list(BETAS),
        "eps": EPS,
        "weight_decay": WEIGHT_DECAY,
        "warmup": WARMUP,
        "total_steps": TOTAL,
        "groups": [{"name": g, "lr": lr, "params": names} for g, lr, names in GROUPS],
        "shapes": SHAPES,
        "initial": initial,
        "grads": grads,
        "schedules": schedules,
        "torch_float32_max_abs_deviation": float(f"{worst32:.3g}"),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(fixture, indent=1)
    # Lists of numbers on one line each.
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    OUT.write_text(text + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes); torch float32 vs float64: {worst32:.3g}")


if __name__ == "__main__":
    main()

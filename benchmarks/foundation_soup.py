"""Average two foundations' weights (a "model soup", WiSE-FT's weight interpolation) and write each
mix as a foundation folder.

Why: the spleen trials (docs/quality.md, items 12-27) found a trade-off between two runs continued
from the same shipped weights: one stage without the per-organ contrast offsets gets the spleen
back at the source site and loses the transfer to the non-contrast new site; the shipped weights
keep the transfer. Fine-tuned runs from one start often lie in one basin, where the mix of their
weights can keep most of what each gained (Wortsman et al., "Robust fine-tuning of zero-shot
models", 2022). An alpha over 1 extrapolates along B - A (a "task vector", Ilharco et al.,
"Editing models with task arithmetic", 2023). Both folders must share backbone, classes and
preprocessing. Measured on v7b's late stages: every mix lay on the line between its ends
(docs/quality.md item 28; benchmarks/results/spleen-trials-v7/soups.md).

Usage: python benchmarks/foundation_soup.py A_FOLDER B_FOLDER --alpha 0.3 --alpha 0.5 --out DIR
       (writes DIR/soup-30, DIR/soup-50: (1 - alpha) * A + alpha * B; score them with
       benchmarks/pretrain_milestones.py 30=DIR/soup-30 ...)
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from medpeft.models.weights import load_foundation, save_foundation


def mix_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
              alpha: float) -> dict[str, torch.Tensor]:
    """(1 - alpha) * a + alpha * b for floating tensors; integer buffers (index tables) from a."""
    if a.keys() != b.keys():
        raise ValueError(f"the two foundations' weights differ in keys: {sorted(a.keys() ^ b.keys())[:5]}")
    return {k: torch.lerp(v, b[k].to(v.dtype), alpha) if v.is_floating_point() else v.clone()
            for k, v in a.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--alpha", type=float, action="append", required=True,
                    help="B's share (over 1: extrapolate past B)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    fa, fb = load_foundation(args.a), load_foundation(args.b)
    if (fa.backbone, fa.classes, fa.preprocessing) != (fb.backbone, fb.classes, fb.preprocessing):
        raise ValueError(f"{args.a} and {args.b} differ in backbone, classes or preprocessing")
    sa, sb = fa.model.state_dict(), fb.model.state_dict()
    for alpha in args.alpha:
        if alpha < 0.0:
            raise ValueError(f"--alpha {alpha}: B's share must not be negative")
        fa.model.load_state_dict(mix_state(sa, sb, alpha))
        folder = args.out / f"soup-{round(alpha * 100):02d}"
        save_foundation(folder, fa.model, fa.backbone, fa.classes, pp=fa.preprocessing,
                        extra={"soup": {"a": str(args.a), "b": str(args.b), "alpha": alpha}})
        print(folder)


if __name__ == "__main__":
    main()

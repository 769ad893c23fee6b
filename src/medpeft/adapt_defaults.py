"""`medpeft adapt`'s measured defaults, in a module that imports nothing: the command line reads
them for its help without loading PyTorch and MONAI (``medpeft --help`` in well under a second).
:mod:`medpeft.methods` re-exports them beside the recipes that use them.
"""
from __future__ import annotations

# `medpeft adapt`'s default: the measured best adaptation method. Decoder tuning first won the
# method grid (benchmarks/adapt_recipe.py, K=5 on the phantom's new site: decoder 0.703,
# lora+affine 0.671, affine 0.663, lora 0.555). Training the encoder's convolutional skip blocks
# beside it, at full fine-tuning's recipe, beats it at K = 5 / 10 on every test volume (peers
# benchmark: 0.830 / 0.869 against 0.802 / 0.848) and draws level at K = 1 (both with the
# background offset), with 36% of the weights; full fine-tuning, a peer that trains and ships
# every weight, is ahead by <= 0.009 (docs/quality.md "Adaptation recipe", docs/peers.md).
DEFAULT_METHOD = "decoder-skips"
# Steps of `medpeft adapt` (benchmarks/adapt_recipe.py at K=5 on the phantom's new site, decoder:
# 240 steps 0.538 mean Dice against 0.445 at 80; docs/quality.md "Adaptation recipe"); the least a part
# whose steps grow with the support set takes (SHOT_SCALING).
ADAPT_STEPS = 240
# The support patches' augmentation while adapting (medpeft.data.augment): ``shape`` rotates and
# scales half the patches before the light jitter. Decoder, v5 foundation, the phantom's new
# site, seeds 0/1/2: K=1 0.640/0.666/0.657 against light's 0.597/0.635/0.601, K=5 0.775/0.773
# against 0.770/0.754 (docs/quality.md "Adaptation recipe").
ADAPT_AUGMENT = "shape"
# bf16 autocast while adapting where the device runs it natively, a no-op elsewhere (decoder K=5
# on the phantom: the same Dice, 0.770, in 54 s against 115 s in float32 on an AMX CPU).
ADAPT_BF16 = True

"""What the demo runs: its foundation's pre-training recipe (the shipped stages) and its
adaptation settings, checked before any file is written. ``medpeft.experiments.demo`` runs it."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from medpeft.methods import DEFAULT_METHOD, SCRATCH

# `medpeft adapt`'s default method with its default recipe, beside the peer (the same network
# from random weights on the same volumes). The other methods are compared in
# benchmarks/adapt_recipe.py and benchmarks/peers.py; `--method` adds rows here.
DEMO_METHODS = (DEFAULT_METHOD,)


@dataclass(frozen=True)
class Continuation:
    """A stage of continued pre-training from the previous stage's weights: its schedule and
    augmentation (with the organs its offsets hold steady), the ROI it moves to (None: the
    previous stage's), how many phantom collections (the demo's seed and the next ones) lend it
    their source tasks, and ``draw_seed``, the seed of its patch and augmentation draws (None: the
    demo's; a stage that repeats the previous one's recipe takes another, or it would draw the
    same patches again)."""

    steps: int
    lr: float = 5e-4
    augment: str = "contrast-shape"
    patch: tuple[int, int, int] | None = None
    collections: int = 1
    steady_organs: tuple[str, ...] = ()
    draw_seed: int | None = None

    def to_recipe(self) -> dict:
        recipe = {"steps": self.steps, "lr": self.lr, "augment": self.augment,
                  "patch": list(self.patch) if self.patch else None,
                  "collections": self.collections}
        # only where set: the recipes of foundations made before these fields stay the same
        if self.steady_organs:
            recipe["steady_organs"] = list(self.steady_organs)
        if self.draw_seed is not None:
            recipe["draw_seed"] = self.draw_seed
        return recipe


# v5's shape-augmented continuation, then v6's: a 64^3 ROI on the source tasks of 8 collections
# (benchmarks/results/foundation-v6-candidate: each worth about +0.02 at the source site); v7b's
# augmentation, the per-organ offsets alone (benchmarks/results/foundation-v7b-candidate); v8's two
# last stages hold the spleen steady under stronger shape augmentation, the second with its own
# draws (the spleen at the source site 0.61 -> 0.70; benchmarks/results/foundation-v8-candidate)
_SPLEEN_STEADY = Continuation(1600, augment="contrast-strong-shape", collections=8,
                              steady_organs=("spleen",))
SHIPPED_CONTINUATIONS = (Continuation(1600),
                         Continuation(3200, patch=(64, 64, 64), collections=8),
                         _SPLEEN_STEADY, replace(_SPLEEN_STEADY, draw_seed=2))


@dataclass
class DemoConfig:
    size: str = "demo"
    seed: int = 0
    backbone: str = "swin-fast"
    # the shipped foundation's recipe (docs/quality.md):
    # a first stage, then a continuation with shape augmentation at a lower rate from its weights
    pretrain_steps: int = 9600
    pretrain_lr: float = 2e-3
    # medpeft.data.augment: the per-organ offsets alone, rotation and scaling only in the later
    # stages (v7b: K=1 and K=5 +0.02 over v6's `phase`, docs/quality.md item 23)
    pretrain_augment: str = "contrast"
    pretrain_sampling: str = "organ-balanced"  # medpeft.data.balance (both stages)
    pretrain_bf16: bool = True  # both stages: bf16 autocast and channels-last where native
    # the continuations, each from the previous stage's weights (empty: one stage only)
    continued: tuple[Continuation, ...] = SHIPPED_CONTINUATIONS
    retrain: bool = False
    adapt_steps: int | None = None  # None: `medpeft adapt`'s default for the method and K
    shots: tuple[int, ...] = (1, 5)
    methods: tuple[str, ...] = DEMO_METHODS
    n_test: int = 6
    options: dict = field(default_factory=lambda: {"lora": {"rank": 4}})
    federated_rounds: int = 3  # the federated section (3 phantom hospitals); 0 leaves it out
    # Methods that run only at some K, to keep the demo within 10 minutes on 2 cores: the peer,
    # the same network from random weights on the same K volumes, runs at K=5
    # (benchmarks/peers.py has every K, 3 seeds, 5x the steps and nnU-Net)
    only_at: dict = field(default_factory=lambda: {SCRATCH: (5,)})
    # None: adapt's default for the scratch peer (240; the default method takes 480 at K=5),
    # stopped on a loss plateau; benchmarks/peers.py gives it 1,200
    scratch_steps: int | None = None
    scratch_patience: int = 40
    # the federation's local steps a round and server step (None: `medpeft federate`'s 40 and
    # 1): the best measured schedule shorter than federate's, on v8 and the demo's phantom (3
    # seeds, benchmarks/results/federated-affine-steps-v8.md): 3 x 20 at server step 1, 0.731 and
    # +0.014 over training alone, against 0.727 at 1.5 and 0.696 at 3 x 10. 3 x 40 (+0.022) took
    # the demo past 10 minutes on 2 float32 cores (10:53, v7b)
    federated_steps: int | None = 20
    federated_server_lr: float | None = 1.0
    # the federated plan (None: `medpeft federate`'s, SEA-PEFT). Affine: at this schedule SEA-PEFT
    # federates higher (v8: 0.750 against 0.731, 3 seeds) but took the demo to 9:44 on 2 float32
    # cores against affine's 8:56 (v7b, benchmarks/results/demo-federation-sea-peft-v7b.md): too
    # close to 10
    federated_plan: str | None = "affine"
    # jobs at once (the cells, the zero-shot scores, the federation); None: one per core on a
    # CPU, one on a GPU (medpeft.experiments.side_by_side)
    workers: int | None = None

    def __post_init__(self) -> None:
        # before the phantom and the foundation are written, not after
        if not self.shots or any(k < 1 for k in self.shots):
            raise ValueError(f"shots {list(self.shots)}: each K must be at least 1")
        if self.federated_rounds < 0:
            raise ValueError(f"federated rounds {self.federated_rounds}: must be 0 or more (0 leaves "
                             "the section out)")


def pretrain_recipe(sources_hash: str, cfg: DemoConfig) -> dict:
    """Everything that determines the demo's foundation model (the source datasets, not the target)."""
    continued = [stage.to_recipe() for stage in cfg.continued] or None
    return {"sources": sources_hash, "backbone": cfg.backbone, "steps": cfg.pretrain_steps,
            "lr": cfg.pretrain_lr, "seed": cfg.seed, "augment": cfg.pretrain_augment,
            "sampling": cfg.pretrain_sampling, "bf16": cfg.pretrain_bf16, "continued": continued}

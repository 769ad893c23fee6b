"""A federation's configuration (YAML) and each hospital's K-shot split.

A hospital is one labelled folder: ``{dataset: path, k: 5, n_test: 2}``, optionally
``part: [i, n]`` to give it the i-th of n disjoint shares of the folder's cases (to make several
phantom hospitals out of one folder), and ``name``. The list's key is ``hospitals`` (``sites``,
its former name, is still read).
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import yaml

from medpeft.data.fewshot import TEST_SPLIT_SEED, write_manifest
from medpeft.data.msd import DataError, load_msd
from medpeft.federated.aggregation import MODES
from medpeft.federated.plans import LORA_PLANS, plan_named
from medpeft.federated.privacy import DPSettings
from medpeft.federated.secure import SecureSettings

HOSPITALS = "hospitals"  # the folder of each hospital's manifest and adapter under ``out``
@dataclass
class FedConfig:
    foundation: str
    hospitals: list[dict]
    out: str = "runs/federated"
    # SEA-PEFT federates best at every schedule measured on v7b and v8 (3 seeds under SecAgg+; on
    # v8 at 3 x 40, server step 1: 0.789 against affine's 0.763, every hospital gaining at every
    # seed; benchmarks/results/federated-seeds-v8-3x40-slr1.md). It refuses dp and local tensors, and
    # names the fixed plan to use there (plans.BEST_FIXED)
    plan: str = "sea-peft"
    local: list[str] = field(default_factory=list)  # tensor patterns each hospital keeps
    rounds: int = 3
    # 40 local steps a round: the longest schedule measured and the best, for affine and SEA-PEFT
    # (three phantom hospitals, 3 seeds; docs/federated.md "Federated plans compared"): affine on v6 gained at
    # every hospital and seed (+0.018, 0.740 federated against 0.685 at 3 x 10), on v8 +0.022 (8 of
    # 9) against +0.014 at 3 x 20 and +0.009 at 3 x 10 (federated-affine-steps-v8.md). 4x 3 x 10's
    # training time.
    local_steps: int = 40
    # the global adapter is evaluated at every hospital before round 1, after every N-th round and
    # after the last (each evaluation costs each hospital about as much as a round's training)
    evaluate_every: int = 1
    # fedavg: the weighted mean of each tensor (for LoRA, of A and B apart). It came within 0.001
    # Dice of svd's exact average of LoRA updates (3 seeds on v6) and 0.008 ahead of it (v7b, seed
    # 0) and, unlike svd, works with SecAgg+, differential privacy and the server step
    aggregation: str = "fedavg"
    # FedOpt's server learning rate: the global tensors move by this times the hospitals' mean
    # update (1: plain FedAvg). For SEA-PEFT at 3 x 40 on v8 1 beats 1.5 (0.789 against 0.783,
    # ahead at 2 of 3 seeds; benchmarks/results/federated-seeds-v8-3x40-slr1.5.md), as it does for
    # affine at 3 x 10 and 3 x 20 (federated-affine-steps-v8.md). 3 left the adapter where it
    # began. svd refuses any step but 1 for LoRA pairs
    server_lr: float = 1.0
    seed: int = 0
    bf16: bool = True  # local training under bf16 autocast where native (as `medpeft adapt`)
    baseline: bool = True  # also train each hospital alone through the same rounds (the gain)
    pooled: bool = True  # also train one model on all hospitals' volumes pooled (the bound)
    sea: dict = field(default_factory=dict)  # plan sea-peft: budget, decay, votes, guard, ...
    dp: dict = field(default_factory=dict)  # clipping_norm, noise_multiplier, delta (privacy.py)
    # dropouts: a round starts once this many hospitals are connected and averages whoever replies
    # (a SuperNode that goes offline mid-round is left out of that round; it may rejoin later)
    min_hospitals: int = 2
    round_timeout_s: float = 3600.0  # a reply not in by then counts as a dropout
    secure_aggregation: bool | dict = False  # SecAgg+ (secure.py): true, or threshold, clipping_range
    tls: dict = field(default_factory=dict)  # --deployment: {ca, certificate, key} of your own PKI
    # --deployment: the heartbeat interval each SuperNode announces; the SuperLink marks a hospital
    # offline after 2 missed (Flower's default 30 s: a dead hospital is noticed within 60 s)
    heartbeat_s: float = 30.0
    # simulation: how many hospitals train at once (Ray actors, one core each; each imports
    # medpeft, ~8 s of CPU); 0: one per core, at most one per hospital
    simulation_workers: int = 0

    def check(self) -> FedConfig:
        plan = plan_named(self.plan)
        if self.aggregation not in MODES:
            raise ValueError(f"aggregation {self.aggregation!r}: choose from {', '.join(MODES)}")
        if self.aggregation == "ffa" and self.plan not in LORA_PLANS:
            raise ValueError(f"aggregation ffa (FFA-LoRA) needs a LoRA plan "
                             f"({', '.join(LORA_PLANS)}), not {self.plan!r}")
        if not 0 < self.server_lr <= 10:
            raise ValueError(f"server_lr {self.server_lr}: must be > 0 and <= 10 (1: plain FedAvg)")
        if len(self.hospitals) < 2:
            raise ValueError(f"a federation needs at least 2 hospitals, got {len(self.hospitals)}")
        if self.dp:
            DPSettings.from_dict(self.dp)
        plan.check(name=self.plan, aggregation=self.aggregation, dp=self.dp, local=self.local,
                   sea=self.sea, secure=bool(self.secure_aggregation), server_lr=self.server_lr)
        if not 1 <= self.min_hospitals <= len(self.hospitals):
            raise ValueError(f"min_hospitals {self.min_hospitals}: must be between 1 and the "
                             f"{len(self.hospitals)} hospitals listed")
        if not self.round_timeout_s > 0:
            raise ValueError(f"round_timeout_s {self.round_timeout_s}: must be > 0 seconds")
        if self.simulation_workers < 0:
            raise ValueError(f"simulation_workers {self.simulation_workers}: must be >= 0 "
                             "(0: one per core)")
        if not 10 <= self.heartbeat_s <= 1800:  # what Flower's SuperLink accepts
            raise ValueError(f"heartbeat_s {self.heartbeat_s}: must be 10 to 1800 seconds")
        if self.secure_aggregation:
            self.check_secure()
        if self.rounds < 1 or self.local_steps < 1 or self.evaluate_every < 1:
            raise ValueError("rounds, local_steps and evaluate_every must be >= 1")
        for i, hospital in enumerate(self.hospitals):
            if "dataset" not in hospital:
                raise ValueError(f"hospital {i}: no 'dataset' folder given")
            part, n = hospital.get("part", (0, 1))
            if not 0 <= part < n:
                raise ValueError(f"hospital {hospital_name(hospital, i)}: part {part} of {n} does not exist")
        names = [hospital_name(s, i) for i, s in enumerate(self.hospitals)]
        if len(set(names)) != len(names):
            raise ValueError(f"hospital names must differ: {names}")
        return self

    def evaluated_rounds(self) -> set[int]:
        """The rounds after which the hospitals evaluate (0: before the first)."""
        return {0, self.rounds} | set(range(self.evaluate_every, self.rounds + 1, self.evaluate_every))

    def check_secure(self) -> None:
        settings = SecureSettings.from_setting(self.secure_aggregation)
        if len(self.hospitals) < settings.threshold:
            raise ValueError(f"secure_aggregation threshold {settings.threshold} needs at least "
                             f"{settings.threshold} hospitals; the federation lists {len(self.hospitals)}")
        if self.min_hospitals < settings.threshold:
            raise ValueError(f"min_hospitals {self.min_hospitals} is below the secure_aggregation "
                             f"threshold {settings.threshold}: a round could start with too few "
                             "hospitals to unmask the sum")

    def resolved(self) -> FedConfig:
        """The same federation with absolute paths (Flower's processes run elsewhere)."""
        absolute = lambda p: str(Path(p).expanduser().resolve())  # noqa: E731
        return replace(self, foundation=absolute(self.foundation), out=absolute(self.out),
                       hospitals=[{**s, "dataset": absolute(s["dataset"])} for s in self.hospitals])

    def to_dict(self) -> dict:
        return asdict(self)


def load_fed_config(path: str | Path) -> FedConfig:
    """Read a federation YAML; unknown keys fail by name, and so does a file that is not YAML."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ValueError(f"{path}: no such federation YAML (foundation: ..., hospitals: ...)") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a federation YAML is a mapping (foundation: ..., hospitals: ...), "
                         f"not a {type(raw).__name__}")
    if "sites" in raw and "hospitals" not in raw:  # the key's former name
        warnings.warn(f"{path}: 'sites' is now called 'hospitals'", FutureWarning, stacklevel=2)
        raw["hospitals"] = raw.pop("sites")
    known = {f.name for f in fields(FedConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
    return FedConfig(**raw).check()


def hospital_name(hospital: dict, index: int) -> str:
    return hospital.get("name") or f"site{index}"


def hospital_split(hospital: dict, index: int, seed: int) -> dict:
    """The hospital's support / test cases: its share of the folder, the test set fixed by the folder."""
    ds = load_msd(hospital["dataset"])
    names = sorted(c.name for c in ds.cases)
    i, n = hospital.get("part", (0, 1))
    share = [names[j] for j in np.random.default_rng(TEST_SPLIT_SEED).permutation(len(names))
             if j % n == i]
    k, n_test = int(hospital.get("k", 5)), int(hospital.get("n_test", 2))
    if len(share) < k + n_test:
        raise ValueError(f"{ds.root}: hospital {hospital_name(hospital, index)} has {len(share)} cases, "
                         f"needs K={k} support + {n_test} test")
    test, pool = sorted(share[:n_test]), share[n_test:]
    support = sorted(np.random.default_rng([seed, index]).choice(pool, size=k, replace=False))
    return {"dataset": str(ds.root), "k": k, "seed": seed, "support": support, "test": test,
            "site": hospital_name(hospital, index)}


def write_hospital_manifests(cfg: FedConfig) -> list[Path]:
    """One manifest per hospital under ``out/hospitals/``; returns their paths in order. Every
    hospital's data problems are listed at once (:class:`DataError`), not only the first's."""
    paths, problems = [], []
    for i, hospital in enumerate(cfg.hospitals):
        try:
            split = hospital_split(hospital, i, cfg.seed)
        except ValueError as err:  # a DataError lists its problems
            problems += getattr(err, "problems", [str(err)])
            continue
        paths.append(write_manifest(Path(cfg.out) / HOSPITALS / f"{hospital_name(hospital, i)}.json",
                                    split))
    if problems:
        raise DataError(problems)
    return paths

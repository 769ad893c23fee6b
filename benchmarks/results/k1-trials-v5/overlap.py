"""The peers run's K=1 decoder adapters rescored at three sliding-window overlaps.

Usage (from the repository root, after benchmarks/peers.py): python benchmarks/results/k1-trials-v5/overlap.py
"""
import json
from pathlib import Path

import numpy as np
import torch

from medpeft.data.msd import load_msd
from medpeft.data.ontology import class_mapping
from medpeft.evaluate.metrics import mean_dice, score_case
from medpeft.infer.predict import predict_probabilities
from medpeft.methods.adapter_io import load_adapter
from medpeft.models.weights import load_foundation

torch.set_num_threads(1)
root = Path("runs/benchmark-peers/Task10_NewSite")
found = load_foundation("src/medpeft/assets/phantom-foundation")
for s in (0, 1, 2):
    cell = root / f"k1-s{s}"
    man = json.loads((cell / "manifest.json").read_text())
    model = load_adapter(cell / "decoder", found)
    ds = load_msd(man["dataset"])
    mapping = class_mapping(ds.labels, found.classes)
    c2l = np.array(mapping.channel_to_local, dtype=np.uint8)
    rows = {}
    for name in man["test"]:
        case = ds.case(name)
        for overlap in (0.25, 0.5, 0.75):
            probs = predict_probabilities(model, case.image, found.preprocessing, overlap=overlap)
            labels = c2l[probs.argmax(0).astype(np.uint8)]
            rows.setdefault(overlap, []).extend(score_case(name, labels, case.label, mapping))
    print(s, {k: round(mean_dice(v), 4) for k, v in rows.items()}, flush=True)

"""Communication accounting: bytes of every message's content, as Flower serialises it.

Each row also carries what the same message would weigh under full fine-tuning of the same
backbone (its arrays replaced by every weight of the model), so the saving is a ratio of
measured sizes, not an estimate from parameter counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from flwr.app import ArrayRecord, RecordDict
from flwr.common.serde import recorddict_to_proto


def content_bytes(content: RecordDict) -> int:
    """Size of a message's content serialised to Flower's protobuf."""
    return recorddict_to_proto(content).ByteSize()


def arrays_bytes(arrays: ArrayRecord) -> int:
    return content_bytes(RecordDict({"arrays": arrays}))


@dataclass
class Ledger:
    """Rows ``{round, node, hospital, phase, direction, bytes, full_ft_bytes}``; ``full_arrays`` is
    the serialised size of an ArrayRecord holding every weight of the model. Hospitals are named by
    ``name_hospitals`` once the server knows which node is which hospital."""

    full_arrays: int
    rows: list[dict] = field(default_factory=list)

    def record(self, server_round: int, node: int, phase: str, direction: str,
               *, content: RecordDict, masked: int = 0) -> None:
        """``masked``: bytes of tensors the content carries as masked bytes (SecAgg+), not arrays."""
        size = content_bytes(content)
        arrays = sum(arrays_bytes(a) for a in content.array_records.values()) + masked
        full = size - arrays + (self.full_arrays if content.array_records or masked else 0)
        self.rows.append({"round": server_round, "node": node, "site": f"node {node}", "phase": phase,
                          "direction": direction, "bytes": size, "full_ft_bytes": full})

    def name_hospitals(self, names: dict[int, str]) -> None:
        for row in self.rows:
            row["site"] = names.get(row["node"], row["site"])

    def per_round(self) -> list[dict]:
        """Bytes down and up per hospital and round (train and evaluate messages together)."""
        table: dict[tuple, dict] = {}
        for r in self.rows:
            row = table.setdefault((r["round"], r["site"]), {"round": r["round"], "site": r["site"],
                                                             "down": 0, "up": 0, "full_ft": 0})
            row[r["direction"]] += r["bytes"]
            row["full_ft"] += r["full_ft_bytes"]
        return sorted(table.values(), key=lambda r: (r["round"], r["site"]))

    def totals(self) -> dict:
        ours = sum(r["bytes"] for r in self.rows)
        full = sum(r["full_ft_bytes"] for r in self.rows)
        train = [r for r in self.rows if r["phase"] == "train"]
        return {"bytes": ours, "full_ft_bytes": full, "ratio": full / ours if ours else float("nan"),
                "train_bytes": sum(r["bytes"] for r in train),
                "train_full_ft_bytes": sum(r["full_ft_bytes"] for r in train),
                "messages": len(self.rows)}


def human(n: float) -> str:
    """Bytes as B / kB / MB."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"

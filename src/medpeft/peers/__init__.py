"""Peers that adaptation must beat, trained on the same K support volumes: nnU-Net v2 from scratch
(``medpeft.peers.nnunet``, optional extra ``peers``). The same network from scratch is the method
``scratch`` (``medpeft.methods.finetune``); both are scored by medpeft's own metrics."""
from __future__ import annotations


class PeerError(RuntimeError):
    """A peer could not run (not installed, crashed, out of time); the message says where to look."""

"""Federated few-shot PEFT on Flower: only the adapter tensors a plan trains travel.

``config`` (the YAML and the hospitals' splits), ``plans`` (what is federated, what stays local),
``hospital`` (local training and evaluation), ``app`` (Flower ClientApp / ServerApp), ``strategy``
(checked, LoRA-exact FedAvg), ``aggregation``, ``accounting`` (bytes), ``run`` (simulation and
report), ``deployment`` (SuperLink / SuperNode processes).
"""

"""Black-box adapters (FSEFT): the foundation model is only called, never read or differentiated.

``service`` seals a model behind a features-only call, ``heads`` holds the trainable adapters
(linear probe, Spatial Adapter), ``cache`` computes the support crops' features once, ``adapt``
trains and saves an adapter, ``predictor`` runs it with sliding-window inference.
"""

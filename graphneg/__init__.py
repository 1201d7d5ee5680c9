"""graphneg: hard negatives for contrastive and metric learning, built on PyTorch Geometric.

Sub-packages: ``graph`` (mini-batch -> PyG graph), ``nn`` (GCA-HNG message-passing layers and the
generator), ``losses`` (metric and contrastive losses), ``sampling`` (UnReMix scores), ``models``
(encoders and LightningModules), ``data`` (DataModules, samplers), ``metrics`` (Recall@K, MAP@R, ...),
``validation`` (input checks; ``value_checks(False)`` turns off the value checks that sync with the host).
"""
from graphneg.graph import batch_graph

__version__ = "0.1.0"
__all__ = ["batch_graph", "__version__"]

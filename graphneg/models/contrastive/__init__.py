r"""Two-view contrastive learning as LightningModules, on images and on graphs.

Both modules train ``loss(g(f(v_1)), g(f(v_2)))``: an encoder ``f`` and a projection head ``g`` on
two augmented views of the same batch (SimCLR, Chen et al., ICML 2020, Sec. 2.1; GraphCL, You et
al., NeurIPS 2020, Sec. 3.2), with any loss of :mod:`graphneg.losses.contrastive`.

* :mod:`graphneg.models.contrastive.base`: the shared two-view training step, optimiser / scheduler,
  UnReMix score histograms and evaluation step outputs (``ContrastiveModuleBase``), and the helpers
  :func:`encoder_dim`, :func:`build_projector`.
* :mod:`graphneg.models.contrastive.image`: :class:`ContrastiveModule` (images).
* :mod:`graphneg.models.contrastive.graph`: :class:`GraphContrastiveModule` (graphs).

Downstream probes (kNN, linear probe, SVC protocol) are callbacks: :mod:`graphneg.callbacks`.
"""
from graphneg.models.contrastive.base import ContrastiveModuleBase, build_projector, encoder_dim
from graphneg.models.contrastive.graph import GraphContrastiveModule
from graphneg.models.contrastive.image import ContrastiveModule

__all__ = [
    "ContrastiveModule", "ContrastiveModuleBase",
    "GraphContrastiveModule",
    "build_projector",
    "encoder_dim",
]

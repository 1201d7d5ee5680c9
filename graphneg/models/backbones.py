"""ImageNet backbones with the GCA-HNG embedding head, for the CUB / Cars / SOP / In-Shop benchmarks.

Both follow the official code (PWenJay/GCA-HNG):

* ``scripts/backbone.py::Resnet50``: torchvision ResNet-50, global average pooling **plus** global max
  pooling of the last stage (``x = gmp(x) + gap(x)``, ``MODEL.POOLING: True``), BatchNorm frozen with
  ``SOLVER.BN_FREEZE`` (BatchNorm2d layers kept in eval mode, their running statistics never update).
* ``scripts/backbone.py::GoogLeNetForHNG``: torchvision GoogLeNet (Inception v1), global average
  pooling, BatchNorm2d kept in eval mode with ``SOLVER.BN_FREEZE`` (``train.py``), no auxiliary heads,
  ``transform_input=True`` with ImageNet weights (torchvision's GoogLeNet
  weights were ported from TensorFlow and expect inputs in [-1, 1]; ``transform_input`` remaps the
  ImageNet-normalised input). The official repository uses torchvision's GoogLeNet, not
  BN-Inception, so this is the faithful choice.
* ``scripts/models.py::Feature_Extractor``: the embedding head ``fc = Sequential(BatchNorm1d(F),
  Linear(F, embedding_dim))`` (:class:`graphneg.models.encoders.EmbeddingHead`, the head of every
  graphneg metric-learning encoder) on the pooled feature (F = 2048 / 1024), no L2 normalisation
  (``MODEL.NORM: False``). The head is the attribute ``fc``, which is what
  :class:`graphneg.models.MetricLearningModule`'s ``warmup_epochs`` / ``head_name="fc"`` trains alone
  during warm-up (official ``SOLVER.WARM_UP_EPOCH``).

Weights are never downloaded. ``weights`` is a local file read with ``torch.load(...,
weights_only=True)``: torchvision's ImageNet state dict (``resnet50-0676ba61.pth``, the
``IMAGENET1K_V1`` weights ``resnet50(pretrained=True)`` loads in the official code;
``googlenet-1378be20.pth``), an official GCA-HNG checkpoint (``GCA_HNG.state_dict()``: keys
``feature_extractor.backbone...`` / ``feature_extractor.fc...``), a graphneg/Lightning checkpoint
(``state_dict`` with ``encoder.`` keys) or this module's own ``state_dict``.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from graphneg.models.encoders import EmbeddingHead

__all__ = ["ResNet50Embedding", "GoogLeNetEmbedding", "load_weight_file"]

TORCHVISION_FILES = {
    "resnet50": "resnet50-0676ba61.pth (https://download.pytorch.org/models/resnet50-0676ba61.pth)",
    "googlenet": "googlenet-1378be20.pth (https://download.pytorch.org/models/googlenet-1378be20.pth)",
}


def load_weight_file(path, arch: str) -> Dict[str, Tensor]:
    """Read a weight file safely (``weights_only=True``) and return its flat tensor state dict.

    Raises ``FileNotFoundError`` naming the file torchvision distributes when ``path`` is missing and
    ``ValueError`` when the file needs full unpickling (with the conversion recipe).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"weights file {p} not found. Download torchvision's ImageNet weights {TORCHVISION_FILES[arch]} on a "
            f"machine with network access and pass its local path (or an official GCA-HNG checkpoint); "
            "use weights: null for random initialisation"
        )
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as err:
        raise ValueError(
            f"{p} cannot be read with torch.load(weights_only=True): it pickles Python objects besides tensors "
            f"({type(err).__name__}). graphneg does not unpickle untrusted files. If you trust it, convert it "
            "once: python -c \"import torch; o = torch.load('IN', weights_only=False); "
            "torch.save(o.get('state_dict', o) if isinstance(o, dict) else o.state_dict(), 'OUT')\" and pass OUT"
        ) from err
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{p} does not hold a state dict (a mapping of parameter names to tensors)")
    return obj


def _strip(sd: Dict[str, Tensor], prefixes: Tuple[str, ...]) -> Dict[str, Tensor]:
    for pre in prefixes:
        if any(k.startswith(pre) for k in sd):
            return {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}
    return sd


class _EmbeddingBackbone(nn.Module):
    arch: str = ""
    feature_dim: int = 0
    official_prefix: str = ""

    def _init_head(self, embedding_dim: int) -> None:
        if not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ValueError(f"embedding_dim must be a positive int, got {embedding_dim!r}")
        self.embedding_dim = embedding_dim
        # official Feature_Extractor.fc: BatchNorm1d(n_mid) + Linear(n_mid, embedding_size)
        self.fc = EmbeddingHead(self.feature_dim, embedding_dim)

    @staticmethod
    def _weights_arg(weights):
        # a command line override `--...weights null` may reach us as the string 'None' / 'null'
        if isinstance(weights, str) and weights.strip().lower() in ("", "none", "null"):
            return None
        return weights

    def _load(self, weights) -> None:
        if weights is None:
            warnings.warn(
                f"{type(self).__name__}: weights=None, the backbone is randomly initialised; the published numbers "
                f"need ImageNet weights ({TORCHVISION_FILES[self.arch]})",
                UserWarning, stacklevel=3,
            )
            return
        sd = load_weight_file(weights, self.arch)
        # official GCA-HNG checkpoint / Lightning checkpoint / our own state dict
        sd = _strip(sd, ("feature_extractor.", "encoder.", "model.encoder."))
        own = {k: v for k, v in sd.items() if k.startswith("fc.") and k[3:4].isdigit()}
        body = _strip({k: v for k, v in sd.items() if k not in own}, ("backbone." + self.official_prefix, "backbone."))
        # torchvision classifier / auxiliary heads are not part of the embedding network
        body = {k: v for k, v in body.items() if not k.split(".")[0] in ("fc", "aux1", "aux2")}
        missing, unexpected = self.backbone.load_state_dict(body, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(
                f"{weights} does not match {self.arch}: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}. Expected torchvision's "
                f"{TORCHVISION_FILES[self.arch].split()[0]} or an official GCA-HNG checkpoint"
            )
        if own:
            self.fc.load_state_dict({k[3:]: v for k, v in own.items()})

    def reset_parameters(self) -> None:
        """Re-initialise the embedding head (the backbone keeps its loaded weights)."""
        self.fc.reset_parameters()

    def train(self, mode: bool = True) -> "_EmbeddingBackbone":
        """``nn.Module.train``, then with ``bn_freeze`` every backbone ``BatchNorm2d`` back in eval mode (its
        running statistics never update; official ``train.py``: ``m.eval()`` on each ``BatchNorm2d`` of the
        feature extractor at the start of every epoch, after ``model.train()``). The head's
        ``BatchNorm1d`` trains, as in the official code."""
        super().train(mode)
        if getattr(self, "bn_freeze", False):
            for m in self.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(embedding_dim={self.embedding_dim}, feature_dim={self.feature_dim})"


class ResNet50Embedding(_EmbeddingBackbone):
    r"""ResNet-50 + avg/max pooling + ``BatchNorm1d`` / ``Linear`` head (official ``Resnet50`` +
    ``Feature_Extractor``).

    Args:
        embedding_dim: output size (official ``EMBEDDING_SIZE`` 512).
        weights: local weight file (see the module docstring) or ``None`` (random, with a warning).
        pooling: ``"avg+max"`` (official ``POOLING: True``: ``gap(x) + gmp(x)``) or ``"avg"``.
        bn_freeze: keep every ``BatchNorm2d`` in eval mode (running statistics frozen) and start with
            their affine parameters frozen (official ``BN_FREEZE``; as in the official ``train.py``, the
            warm-up of :class:`~graphneg.models.MetricLearningModule` re-enables their gradients after
            the warm-up epochs, the statistics stay frozen).
        normalize: L2-normalise the output (official ``NORM``, False in every published config).

    Shapes:
        - input: images ``[N, 3, H, W]`` (ImageNet-normalised; 224 x 224 in the protocol)
        - output: embeddings ``[N, embedding_dim]``
    """

    arch, feature_dim, official_prefix = "resnet50", 2048, "model."

    def __init__(
        self,
        embedding_dim: int = 512,
        weights: Optional[str] = None,
        pooling: str = "avg+max",
        bn_freeze: bool = True,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        from torchvision.models import resnet50

        weights = self._weights_arg(weights)
        if pooling not in ("avg+max", "avg"):
            raise ValueError(f"pooling must be 'avg+max' (official) or 'avg', got {pooling!r}")
        self.pooling, self.bn_freeze, self.normalize = pooling, bool(bn_freeze), bool(normalize)
        self.backbone = resnet50(weights=None)
        self.backbone.fc = nn.Identity()
        self._init_head(embedding_dim)
        self._load(weights)
        if self.bn_freeze:
            for m in self.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.requires_grad_(False)
                    m.bias.requires_grad_(False)

    def features(self, x: Tensor) -> Tensor:
        """Pooled backbone feature ``[N, 2048]``."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        x = b.layer4(b.layer3(b.layer2(b.layer1(x))))
        avg = x.mean(dim=(2, 3))
        return avg + x.amax(dim=(2, 3)) if self.pooling == "avg+max" else avg

    def forward(self, x: Tensor) -> Tensor:
        z = self.fc(self.features(x))
        return nn.functional.normalize(z, dim=-1) if self.normalize else z


class GoogLeNetEmbedding(_EmbeddingBackbone):
    r"""torchvision GoogLeNet (Inception v1) + global average pooling + ``BatchNorm1d`` / ``Linear`` head
    (official ``GoogLeNetForHNG`` + ``Feature_Extractor``).

    Args:
        embedding_dim: output size (official 512).
        weights: local weight file (torchvision's ``googlenet-1378be20.pth`` or an official checkpoint)
            or ``None`` (random, with a warning).
        transform_input: remap ImageNet-normalised input to the [-1, 1] range the TF-ported weights
            expect; default: ``True`` when ``weights`` is given (official ``googlenet(pretrained=True)``).
        bn_freeze: keep every backbone ``BatchNorm2d`` in eval mode, so its running statistics never
            update (official ``SOLVER.BN_FREEZE``: ``True`` in ``G_CUB200.yml`` / ``G_CAR196.yml``,
            ``False`` in ``G_SOP.yml`` / ``G_INSHOP.yml``). Their affine parameters keep training, as in the
            official code (``train.py`` only calls ``m.eval()``; unlike ``Resnet50``, the official
            ``googlenet`` does not set their ``requires_grad``). Default ``False`` (torchvision's behaviour).
        freeze_bn: the same switch under the name users of other trainers know (``GoogLeNetEmbedding(
            freeze_bn=True)``); give one of the two.

    Shapes:
        - input: images ``[N, 3, H, W]`` (ImageNet-normalised; 224 x 224 in the protocol)
        - output: embeddings ``[N, embedding_dim]``
    """

    arch, feature_dim, official_prefix = "googlenet", 1024, ""

    def __init__(
        self,
        embedding_dim: int = 512,
        weights: Optional[str] = None,
        transform_input: Optional[bool] = None,
        bn_freeze: bool = False,
        freeze_bn: Optional[bool] = None,
    ) -> None:
        super().__init__()
        from torchvision.models import GoogLeNet

        if freeze_bn is not None:
            if bn_freeze:
                raise ValueError("GoogLeNetEmbedding: give bn_freeze or freeze_bn (the same switch), not both")
            bn_freeze = freeze_bn
        weights = self._weights_arg(weights)
        self.bn_freeze = bool(bn_freeze)
        self.transform_input = (weights is not None) if transform_input is None else bool(transform_input)
        self.backbone = GoogLeNet(
            num_classes=1000, aux_logits=False, transform_input=self.transform_input, init_weights=weights is None
        )
        self.backbone.fc = nn.Identity()
        self.backbone.dropout = nn.Identity()
        self._init_head(embedding_dim)
        self._load(weights)

    def features(self, x: Tensor) -> Tensor:
        """Average-pooled Inception-5b feature ``[N, 1024]`` (torchvision ``GoogLeNet`` without fc)."""
        b = self.backbone
        x = b._transform_input(x)
        x = b.maxpool2(b.conv3(b.conv2(b.maxpool1(b.conv1(x)))))
        x = b.maxpool3(b.inception3b(b.inception3a(x)))
        x = b.inception4e(b.inception4d(b.inception4c(b.inception4b(b.inception4a(x)))))
        x = b.inception5b(b.inception5a(b.maxpool4(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))

"""ResNet50Embedding / GoogLeNetEmbedding: official heads, local weight files only, safe loading."""
import warnings

import pytest
import torch
from torch import nn

from graphneg.models import GoogLeNetEmbedding, ResNet50Embedding


def _quiet(cls, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return cls(**kw)


def test_random_init_warns():
    with pytest.warns(UserWarning, match="randomly initialised.*resnet50-0676ba61.pth"):
        ResNet50Embedding(embedding_dim=8)
    with pytest.warns(UserWarning, match="randomly initialised.*googlenet-1378be20.pth"):
        GoogLeNetEmbedding(embedding_dim=8)


def test_missing_file_names_torchvision_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="resnet50-0676ba61.pth"):
        ResNet50Embedding(weights=str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match="googlenet-1378be20.pth"):
        GoogLeNetEmbedding(weights=str(tmp_path / "nope.pth"))


def test_pickled_file_refused_with_conversion_recipe(tmp_path):
    import argparse

    p = tmp_path / "pickled.pth"
    torch.save({"conv1.weight": torch.zeros(1), "args": argparse.Namespace(lr=0.1)}, p)  # needs full unpickling
    with pytest.raises(ValueError, match=r"weights_only=True.*convert it.*torch.save"):
        ResNet50Embedding(weights=str(p))


def test_resnet50_torchvision_weights_and_avg_max_pooling(tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(0)
    tv = resnet50(weights=None)
    p = tmp_path / "resnet50-0676ba61.pth"
    torch.save(tv.state_dict(), p)
    m = ResNet50Embedding(embedding_dim=16, weights=str(p))
    m.eval(), tv.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        h = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
        want = m.fc(h.mean((2, 3)) + h.amax((2, 3)))  # official Resnet50: gmp(x) + gap(x), then BN1d + Linear
        assert torch.allclose(m(x), want, atol=1e-5)
    assert isinstance(m.fc[0], nn.BatchNorm1d) and m.fc[1].in_features == 2048 and m(x).shape == (2, 16)


def test_resnet50_bn_freeze():
    m = _quiet(ResNet50Embedding, embedding_dim=8, bn_freeze=True)
    m.train()
    bns = [mod for mod in m.backbone.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert bns and all(not b.training for b in bns) and m.fc[0].training
    assert all(not b.weight.requires_grad for b in bns)
    before = bns[0].running_mean.clone()
    m(torch.randn(3, 3, 32, 32))
    assert torch.equal(bns[0].running_mean, before)  # statistics frozen
    free = _quiet(ResNet50Embedding, embedding_dim=8, bn_freeze=False).train()
    assert all(mod.training for mod in free.backbone.modules() if isinstance(mod, nn.BatchNorm2d))


def test_googlenet_torchvision_weights(tmp_path):
    from torchvision.models import GoogLeNet

    torch.manual_seed(1)
    tv = GoogLeNet(aux_logits=True, transform_input=True, init_weights=True)  # the file keeps aux heads
    p = tmp_path / "googlenet-1378be20.pth"
    torch.save(tv.state_dict(), p)
    m = GoogLeNetEmbedding(embedding_dim=16, weights=str(p))
    assert m.transform_input
    tv.aux_logits, tv.aux1, tv.aux2 = False, None, None
    tv.fc = nn.Identity()
    m.eval(), tv.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = m.features(x)
        assert torch.allclose(f, tv(x), rtol=1e-4, atol=1e-6 * f.abs().max().item())
        assert torch.allclose(m(x), m.fc(f))


def test_official_checkpoint_keys(tmp_path):
    """An official GCA-HNG state dict (feature_extractor.backbone.model.* / feature_extractor.fc.*, plus the
    GNN and classifier) loads into the backbone and the head."""
    src = _quiet(ResNet50Embedding, embedding_dim=8)
    with torch.no_grad():
        src.fc[1].weight.normal_()
    sd = {"feature_extractor.backbone.model." + k[len("backbone."):]: v
          for k, v in src.state_dict().items() if k.startswith("backbone.")}
    sd.update({"feature_extractor." + k: v for k, v in src.state_dict().items() if k.startswith("fc.")})
    sd["gnn.layer.weight"] = torch.zeros(3)
    sd["softmax_classifier.weight"] = torch.zeros(3)
    p = tmp_path / "bestR_1.pth"
    torch.save(sd, p)
    m = ResNet50Embedding(embedding_dim=8, weights=str(p))
    for k, v in src.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k


def test_wrong_architecture_file(tmp_path):
    p = tmp_path / "w.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, p)
    with pytest.raises(ValueError, match="does not match googlenet: missing"):
        GoogLeNetEmbedding(weights=str(p))

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


def test_embedding_head_is_the_official_feature_extractor_fc():
    """Official PWenJay/GCA-HNG scripts/models.py, Feature_Extractor: ``self.fc = nn.Sequential(
    nn.BatchNorm1d(n_mid), nn.Linear(n_mid, embedding_size))`` applied to the pooled feature, no L2 norm.
    The same head module ends SmallCNN (default), ResNet50Embedding and GoogLeNetEmbedding."""
    from graphneg.models import SmallCNN
    from graphneg.models.encoders import EmbeddingHead

    torch.manual_seed(0)
    head = EmbeddingHead(12, 5)
    kinds = [type(m) for m in head.children()]
    assert kinds == [nn.BatchNorm1d, nn.Linear]
    bn, lin = head[0], head[1]
    assert (bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats) == (12, 1e-5, 0.1, True, True)
    assert (lin.in_features, lin.out_features, lin.bias is not None) == (12, 5, True)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.normal_()
    x = torch.randn(7, 12) * 3 + 1
    # training mode: batch statistics (biased variance), then the affine map, then x W^T + b
    xhat = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5) * bn.weight + bn.bias
    assert torch.allclose(head(x), xhat @ lin.weight.T + lin.bias, atol=1e-5)
    assert set(head.state_dict()) == {"0.weight", "0.bias", "0.running_mean", "0.running_var",
                                      "0.num_batches_tracked", "1.weight", "1.bias"}  # official fc.0 / fc.1 keys
    plain = EmbeddingHead(12, 5, norm="linear")
    assert [type(m) for m in plain.children()] == [nn.Linear]
    assert torch.allclose(plain(x), x @ plain[0].weight.T + plain[0].bias)

    cnn = SmallCNN(1, 16, width=4)
    assert isinstance(cnn.fc, EmbeddingHead) and cnn.fc.norm == "batchnorm" and cnn.fc[0].num_features == 16
    img = torch.randn(6, 1, 28, 28)
    assert torch.allclose(cnn(img), cnn.fc(cnn.features(img)))
    assert [type(m) for m in SmallCNN(1, 16, width=4, head="linear").fc.children()] == [nn.Linear]
    for enc in (_quiet(ResNet50Embedding, embedding_dim=8), _quiet(GoogLeNetEmbedding, embedding_dim=8)):
        assert isinstance(enc.fc, EmbeddingHead) and enc.fc.norm == "batchnorm"
        assert enc.fc[0].num_features == enc.feature_dim and enc.fc[1].out_features == 8
    with pytest.raises(ValueError, match="norm must be one of"):
        EmbeddingHead(4, 2, norm="layer")
    with pytest.raises(ValueError, match="head must be one of"):
        SmallCNN(1, 8, head="bn")


def test_smallcnn_pool_keeps_the_two_halves_apart():
    """pool=(1, 2): the pooled feature is [left-half average, right-half average] per channel, so swapping
    the two halves of an image swaps the two blocks (global pooling gives the same feature up to edge
    effects); reference: the feature map averaged over each half by hand."""
    from graphneg.models import SmallCNN

    torch.manual_seed(0)
    cnn = SmallCNN(1, 8, width=4, pool=(1, 2)).eval()
    x = torch.randn(3, 1, 28, 56)
    fmap = cnn.features[:-2](x)  # before AdaptiveAvgPool2d + Flatten: [3, 16, 7, 14]
    want = torch.stack([fmap[..., :7].mean((2, 3)), fmap[..., 7:].mean((2, 3))], dim=-1).flatten(1)
    assert torch.allclose(cnn.features(x), want, atol=1e-6)
    assert cnn.out_channels == 32 and cnn.fc[0].num_features == 32
    with pytest.raises(ValueError, match="pool must be"):
        SmallCNN(1, 8, pool=(1, 0))


@pytest.mark.parametrize("freeze", [True, False])
@pytest.mark.parametrize("name", ["bn_freeze", "freeze_bn"])
def test_googlenet_bn_freeze_keeps_running_statistics(freeze, name):
    """Official train.py with BN_FREEZE: every BatchNorm2d of the feature extractor in eval mode each epoch
    (after model.train()); the affine parameters still train (the official googlenet() leaves their
    requires_grad alone). The head's BatchNorm1d trains either way."""
    torch.manual_seed(0)
    m = _quiet(GoogLeNetEmbedding, embedding_dim=8, **{name: freeze})
    bns = [mod for mod in m.backbone.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert len(bns) == 57
    # calibrate the statistics as pretrained weights would have them (random init + mean 0 / var 1 makes the
    # eval-mode activations vanish), then train() again: the freeze is re-applied
    nn.Module.train(m, True)
    for b in bns:
        b.momentum = None  # cumulative average: the first batch's statistics exactly
    with torch.no_grad():
        m(torch.randn(8, 3, 32, 32))
    for b in bns:
        b.momentum = 0.1
    m.train()
    stats = [(b.running_mean.clone(), b.running_var.clone()) for b in bns]
    affine = [b.weight.detach().clone() for b in bns]
    head_stats = m.fc[0].running_mean.clone()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m(torch.randn(4, 3, 32, 32)).pow(2).mean().backward()
    opt.step()
    same = [torch.equal(b.running_mean, s[0]) and torch.equal(b.running_var, s[1]) for b, s in zip(bns, stats)]
    assert all(same) if freeze else not any(same)
    assert all(b.weight.requires_grad for b in bns)
    # affine parameters train (every one is reached by the gradient; dead ReLU channels may get zeros)
    assert all(b.weight.grad is not None and b.bias.grad is not None for b in bns)
    assert sum(not torch.equal(b.weight, a) for b, a in zip(bns, affine)) > len(bns) // 2
    assert not torch.equal(m.fc[0].running_mean, head_stats)
    assert all(b.training != freeze for b in bns) and m.fc[0].training


def test_googlenet_freeze_bn_and_bn_freeze_are_one_switch():
    with pytest.raises(ValueError, match="bn_freeze or freeze_bn"):
        GoogLeNetEmbedding(embedding_dim=8, bn_freeze=True, freeze_bn=True)

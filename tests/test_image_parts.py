"""Image-contrastive building blocks: CIFAR ResNets, projector, SimCLR views, kNN / linear probes,
offline CIFAR / STL DataModules."""
import math
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from graphneg.data.image_augment import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    MNIST_MEAN,
    MNIST_STD,
    SimCLRViews,
    cifar_views,
    digit_views,
    eval_transform,
    stl_views,
)
from graphneg.data.vision import CIFAR10DataModule, CIFAR100DataModule, STL10DataModule
from graphneg.metrics.probe import knn_accuracy, knn_predict, linear_probe, logistic_probe
from graphneg.models.projector import MLPProjector
from graphneg.models.resnet import resnet18, resnet50


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one intra-op thread avoids OpenMP contention on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------- ResNets

def test_resnet18_cifar_stem_and_output():
    torch.manual_seed(0)
    net = resnet18()
    assert isinstance(net.conv1, nn.Conv2d)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1) and net.conv1.padding == (1, 1)
    assert net.conv1.in_channels == 3 and net.conv1.out_channels == 64
    assert isinstance(net.maxpool, nn.Identity) and isinstance(net.fc, nn.Identity)
    assert net.out_channels == 512
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())

    # the stem keeps the 32x32 resolution: layer1 sees a 32x32 map (ImageNet stem: 8x8)
    seen = {}

    def hook(module, inputs, output):
        seen["shape"] = tuple(inputs[0].shape)

    net.layer1.register_forward_hook(hook)
    net.eval()
    out = net(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 512)
    assert seen["shape"] == (4, 64, 32, 32)

    # parameter count = torchvision resnet18 - (7x7x3x64 stem conv) + (3x3x3x64) - fc(512 -> 1000)
    from torchvision.models import resnet18 as tv_resnet18
    tv = sum(p.numel() for p in tv_resnet18(weights=None).parameters())
    expected = tv - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64 - (512 * 1000 + 1000)
    assert sum(p.numel() for p in net.parameters()) == expected


def test_resnet18_one_channel_and_bad_input():
    net = resnet18(in_channels=1).eval()
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 512)
    with pytest.raises(ValueError, match=r"expects images of shape \[N, 1, H, W\]"):
        net(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        resnet18(in_channels=0)


def test_resnet50_shape():
    net = resnet50().eval()
    assert net.out_channels == 2048
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 2048)


# ---------------------------------------------------------------------------------------- projector

def test_projector_matches_hcl_head_and_manual_forward():
    torch.manual_seed(0)
    proj = MLPProjector(512)
    lin1, bn, relu, lin2 = proj.net
    assert isinstance(lin1, nn.Linear) and lin1.in_features == 512 and lin1.out_features == 512
    assert lin1.bias is None
    assert isinstance(bn, nn.BatchNorm1d) and isinstance(relu, nn.ReLU)
    assert isinstance(lin2, nn.Linear) and lin2.out_features == 128 and lin2.bias is not None
    x = torch.randn(6, 512)

    # eval mode, fresh running stats (mean 0, var 1): z = W2 relu(W1 x / sqrt(1 + eps)) + b2
    proj.eval()
    with torch.no_grad():
        ref = torch.relu(x @ lin1.weight.t() / math.sqrt(1 + bn.eps)) @ lin2.weight.t() + lin2.bias
        assert torch.allclose(proj(x), ref, atol=1e-5)
    # train mode: batch statistics, z = W2 relu((h - mean_B) / sqrt(var_B + eps)) + b2 with h = W1 x
    proj.train()
    h = x @ lin1.weight.t()
    h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + bn.eps)
    ref = torch.relu(h) @ lin2.weight.t() + lin2.bias
    out = proj(x)
    assert out.shape == (6, 128) and torch.allclose(out, ref, atol=1e-4)


def test_projector_depth_and_errors():
    one = MLPProjector(16, out_dim=4, num_layers=1)
    assert len(one.net) == 1 and one(torch.randn(3, 16)).shape == (3, 4)
    three = MLPProjector(16, hidden_dim=8, out_dim=4, num_layers=3, batch_norm=False)
    assert sum(isinstance(m, nn.Linear) for m in three.net) == 3
    assert not any(isinstance(m, nn.BatchNorm1d) for m in three.net)
    assert all(m.bias is not None for m in three.net if isinstance(m, nn.Linear))
    assert three(torch.randn(3, 16)).shape == (3, 4)
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        MLPProjector(16, num_layers=0)
    with pytest.raises(ValueError, match=r"expects features of shape \[N, 16\]"):
        one(torch.randn(3, 8))


# ------------------------------------------------------------------------------------------- views

def _rgb_image(h=32, w=32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


def test_cifar_views_shape_differ_and_seeded():
    arr = _rgb_image()
    pil = Image.fromarray(arr)
    views = cifar_views()
    torch.manual_seed(1)
    v1, v2 = views(pil)
    assert v1.shape == v2.shape == (3, 32, 32)
    assert type(v1) is torch.Tensor and v1.dtype == torch.float32
    assert not torch.allclose(v1, v2)
    torch.manual_seed(1)
    w1, w2 = views(pil)
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    # the same image as a uint8 tensor and as a float tensor in [0, 1] gives the same views
    chw = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    torch.manual_seed(1)
    t1, t2 = views(chw)
    assert torch.equal(t1, v1) and torch.equal(t2, v2)
    torch.manual_seed(1)
    f1, f2 = views(chw.float() / 255)
    assert torch.allclose(f1, v1, atol=1e-4) and torch.allclose(f2, v2, atol=1e-4)


def test_identity_views_equal_normalised_image():
    """No crop (scale 1, ratio 1), no flip, no colour: each view is just (x / 255 - mean) / std."""
    arr = _rgb_image(seed=3)
    views = SimCLRViews(32, CIFAR10_MEAN, CIFAR10_STD, strength=0.0, hflip=False, crop_scale=(1.0, 1.0),
                        crop_ratio=(1.0, 1.0), grayscale_prob=0.0)
    ref = (torch.from_numpy(arr).permute(2, 0, 1).float() / 255 - torch.tensor(CIFAR10_MEAN)[:, None, None]) \
        / torch.tensor(CIFAR10_STD)[:, None, None]
    v1, v2 = views(Image.fromarray(arr))
    assert torch.allclose(v1, ref, atol=1e-5) and torch.allclose(v2, ref, atol=1e-5)
    e = eval_transform(CIFAR10_MEAN, CIFAR10_STD)(Image.fromarray(arr))
    assert torch.allclose(e, ref, atol=1e-5)


def test_stl_and_digit_views():
    torch.manual_seed(0)
    s1, s2 = stl_views()(torch.from_numpy(_rgb_image(96, 96)).permute(2, 0, 1))
    assert s1.shape == s2.shape == (3, 96, 96) and not torch.allclose(s1, s2)

    digit = torch.zeros(1, 28, 28, dtype=torch.uint8)
    digit[0, 6:22, 12:16] = 255                       # a vertical stroke, a "1"
    views = digit_views()
    assert not any(type(t).__name__ in ("RandomHorizontalFlip", "ColorJitter", "RandomGrayscale")
                   for t in views.transform.transforms)
    torch.manual_seed(0)
    d1, d2 = views(digit)
    assert d1.shape == d2.shape == (1, 28, 28) and not torch.allclose(d1, d2)
    torch.manual_seed(0)
    p1, p2 = views(Image.fromarray(digit[0].numpy(), mode="L"))
    assert torch.equal(p1, d1) and torch.equal(p2, d2)
    # values stay within the normalised range of [0, 1] pixels
    lo, hi = (0 - MNIST_MEAN[0]) / MNIST_STD[0], (1 - MNIST_MEAN[0]) / MNIST_STD[0]
    assert d1.min() >= lo - 1e-5 and d1.max() <= hi + 1e-5


def test_mnist_statistics_have_one_home():
    """MNIST_MEAN / MNIST_STD live in image_augment (per-channel tuples); the MNIST-5k dataset's
    evaluation images and the digit views use the same constants, so both land on one scale."""
    from graphneg.data import mnist
    from graphneg.data.mnist import TensorImageDataset

    assert mnist.MNIST_MEAN is MNIST_MEAN and mnist.MNIST_STD is MNIST_STD
    assert MNIST_MEAN == (0.1307,) and MNIST_STD == (0.3081,)  # the PyTorch MNIST example's values
    images = torch.tensor([[[[0, 255], [51, 128]]]], dtype=torch.uint8)
    x, _ = TensorImageDataset(images, torch.tensor([3]))[0]
    ref = torch.tensor([[[(0 / 255 - 0.1307) / 0.3081, (1 - 0.1307) / 0.3081],
                         [(51 / 255 - 0.1307) / 0.3081, (128 / 255 - 0.1307) / 0.3081]]])
    torch.testing.assert_close(x, ref.float(), atol=1e-6, rtol=0)
    # the un-augmented digit view equals the dataset's evaluation image
    torch.testing.assert_close(digit_views().eval_transform()(images[0].float() / 255.0), x, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="one value per channel"):
        TensorImageDataset(images, torch.tensor([3]), mean=(0.5, 0.5), std=(0.5,))


def test_views_bad_arguments():
    with pytest.raises(ValueError, match="mean and std need one value per channel"):
        SimCLRViews(32, (0.5, 0.5), (0.5,))
    with pytest.raises(ValueError, match="crop_scale must satisfy"):
        SimCLRViews(32, CIFAR10_MEAN, CIFAR10_STD, crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="grayscale=True expects single-channel"):
        SimCLRViews(32, CIFAR10_MEAN, CIFAR10_STD, grayscale=True)


# ---------------------------------------------------------------------------------------------- kNN

def _loop_knn_predict(train, train_y, test, k, t):
    """Reference: Wu et al. 2018 weighted kNN, one query and one neighbour at a time."""
    preds = []
    for q in test.tolist():
        sims = []
        for x, y in zip(train.tolist(), train_y.tolist()):
            dot = sum(a * b for a, b in zip(q, x))
            sims.append((dot / (math.sqrt(sum(a * a for a in q)) * math.sqrt(sum(b * b for b in x))), y))
        sims.sort(key=lambda p: -p[0])
        votes = {}
        for s, y in sims[:k]:
            votes[y] = votes.get(y, 0.0) + math.exp(s / t)
        best = max(votes.values())
        preds.append(min(c for c, v in votes.items() if v == best))
    return preds


@pytest.mark.parametrize("k,t", [(1, 0.1), (5, 0.1), (7, 0.5), (50, 0.07)])
def test_knn_matches_loop(k, t):
    g = torch.Generator().manual_seed(0)
    train = torch.randn(30, 6, generator=g)
    train_y = torch.randint(0, 3, (30,), generator=g)
    test = torch.randn(17, 6, generator=g)
    test_y = torch.randint(0, 3, (17,), generator=g)
    ref = _loop_knn_predict(train, train_y, test, min(k, 30), t)
    pred = knn_predict(train, train_y, test, k=k, temperature=t, chunk_size=4)
    assert pred.tolist() == ref
    acc = knn_accuracy(train, train_y, test, test_y, k=k, temperature=t, chunk_size=4)
    assert acc == pytest.approx(sum(int(p == y) for p, y in zip(ref, test_y.tolist())) / 17)


def test_knn_separated_clusters_and_errors():
    g = torch.Generator().manual_seed(1)
    centres = torch.eye(4) * 10
    train_y = torch.arange(4).repeat_interleave(10)
    test_y = torch.arange(4).repeat_interleave(5)
    train = centres[train_y] + 0.1 * torch.randn(40, 4, generator=g)
    test = centres[test_y] + 0.1 * torch.randn(20, 4, generator=g)
    assert knn_accuracy(train, train_y, test, test_y, k=10, chunk_size=3) == 1.0
    with pytest.raises(ValueError, match="same feature size"):
        knn_accuracy(train, train_y, test[:, :3], test_y)
    with pytest.raises(ValueError, match="non-negative class ids"):
        knn_accuracy(train, train_y - 1, test, test_y)
    with pytest.raises(ValueError, match="k must be a positive int"):
        knn_accuracy(train, train_y, test, test_y, k=0)


# ------------------------------------------------------------------------------------ linear probes

def _clusters(n_per, classes=4, dim=16, spread=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(classes, dim, generator=g)
    y = torch.arange(classes).repeat_interleave(n_per)
    return centres[y] + spread * torch.randn(len(y), dim, generator=g), y


def test_linear_and_logistic_probe_separable():
    x, y = _clusters(40)
    xt, yt = _clusters(25, seed=0)
    g = torch.Generator().manual_seed(5)
    xt = xt + 0.1 * torch.randn(xt.shape, generator=g)
    assert linear_probe(x, y, xt, yt, epochs=50, batch_size=None) >= 0.98
    assert linear_probe(x, y, xt, yt, epochs=20, batch_size=32, seed=3) >= 0.98
    assert logistic_probe(x, y, xt, yt) >= 0.98


def test_linear_and_logistic_probe_random_labels_near_chance():
    g = torch.Generator().manual_seed(2)
    x, xt = torch.randn(400, 16, generator=g), torch.randn(400, 16, generator=g)
    y, yt = torch.randint(0, 4, (400,), generator=g), torch.randint(0, 4, (400,), generator=g)
    # chance = 0.25; binomial std over 400 test points ~ 0.022
    assert 0.15 < linear_probe(x, y, xt, yt, epochs=30, batch_size=128) < 0.35
    assert 0.15 < logistic_probe(x, y, xt, yt) < 0.35
    # training accuracy is higher than chance (the layer does fit), test stays at chance
    assert linear_probe(x, y, x, y, epochs=30, batch_size=128) > 0.3


def test_linear_probe_deterministic_and_errors():
    x, y = _clusters(10, spread=3.0)
    a = linear_probe(x, y, x, y, epochs=5, batch_size=8, seed=0)
    b = linear_probe(x, y, x, y, epochs=5, batch_size=8, seed=0)
    assert a == b
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        linear_probe(x, y, x, y, epochs=0)
    with pytest.raises(ValueError, match=r"train_labels must be a vector .* expected shape \[40\]"):
        linear_probe(x, y[:5], x, y)


# ----------------------------------------------------------------------------------- DataModules

@pytest.mark.parametrize("cls,folder,hint", [
    (CIFAR10DataModule, "cifar-10-batches-py", "cifar-10-python.tar.gz"),
    (CIFAR100DataModule, "cifar-100-python", "cifar-100-python.tar.gz"),
    (STL10DataModule, "stl10_binary", "stl10_binary.tar.gz"),
])
def test_datamodule_missing_folder(tmp_path, cls, folder, hint):
    dm = cls(root=str(tmp_path), num_workers=0)
    with pytest.raises(FileNotFoundError, match=folder) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert hint in msg and "tar -xzf" in msg and "never downloads" in msg and str(tmp_path) in msg
    with pytest.raises(FileNotFoundError):
        dm.prepare_data()


def test_cifar10_missing_files_listed(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"missing: data_batch_2, data_batch_3"):
        CIFAR10DataModule(root=str(tmp_path), num_workers=0).setup("fit")


def _write_fake_cifar10(root, per_batch=4, seed=0):
    """The official python-pickle layout of cifar-10-batches-py with a few random images."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3 * 32 * 32), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels,
                         "filenames": [f"{name}_{i}.png" for i in range(per_batch)]}, f)
        batches[name] = (data, labels)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return batches


def test_cifar10_datamodule_reads_fake_folder(tmp_path):
    batches = _write_fake_cifar10(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), batch_size=6, num_workers=0, verify_checksums=False)
    dm.setup("fit")
    assert len(dm.train_set) == 20 and len(dm.memory_set) == 20 and len(dm.test_set) == 4
    assert dm.classes[0] == "airplane"

    torch.manual_seed(0)
    train_labels = [y for n in sorted(batches) if n != "test_batch" for y in batches[n][1]]
    loader = dm.train_dataloader()
    assert len(loader) == 3                                   # 20 // 6, drop_last
    v1, v2, y = next(iter(loader))
    assert v1.shape == v2.shape == (6, 3, 32, 32) and y.shape == (6,)
    assert not torch.allclose(v1, v2)
    assert set(y.tolist()) <= set(train_labels)

    # test split: (image, label), the image being the normalised pickled pixels
    x, yt = next(iter(dm.test_dataloader()))
    data, labels = batches["test_batch"]
    ref = torch.from_numpy(data.reshape(-1, 3, 32, 32)).float() / 255
    ref = (ref - torch.tensor(CIFAR10_MEAN)[:, None, None]) / torch.tensor(CIFAR10_STD)[:, None, None]
    assert yt.tolist() == labels
    assert torch.allclose(x, ref, atol=1e-5)
    xv, _ = next(iter(dm.val_dataloader()))
    assert torch.equal(xv, x)

    # memory subset + [memory, test] validation loaders
    dm2 = CIFAR10DataModule(root=str(tmp_path), batch_size=6, num_workers=0, verify_checksums=False,
                            memory_size=7, val_with_memory=True)
    dm2.setup("validate")
    mem, test = dm2.val_dataloader()
    assert len(mem.dataset) == 7 and len(test.dataset) == 4
    xm, ym = next(iter(mem))
    assert xm.shape == (7, 3, 32, 32)

    # the official MD5 check rejects the fake files with a clear hint
    with pytest.raises(RuntimeError, match="verify_checksums=False"):
        CIFAR10DataModule(root=str(tmp_path), num_workers=0).setup("fit")

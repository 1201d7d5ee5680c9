"""A GCA-HNG training step (forward, generator losses, backward) under CPU autocast: the backward pass
must run and the loss stay within graphneg.precision's tolerance of float32 (tests/test_precision.py
checks the forward only). The CUDA twin, tests/test_gpu.py::test_gcahng_step_under_cuda_autocast_within_tolerance,
runs :func:`check_gca_autocast_step` on the GPU."""
import pytest
import torch

from graphneg.losses.gca_hng import generator_loss, node_loss
from graphneg.nn import GCAHNG

RTOL_GCA = {torch.bfloat16: 2e-2, torch.float16: 5e-3}  # as tests/test_precision.py (graphneg.precision)
def check_gca_autocast_step(device, dtype):
    torch.manual_seed(0)
    gen = GCAHNG(32, num_classes=6, num_layers=2, heads=4, rw="chain", dropout=0.0).to(device)
    clf = torch.nn.Linear(32, 6).to(device)
    z, y = torch.randn(18, 32).to(device), torch.arange(6, device=device).repeat(3)
    out = gen(z, y, j_mean=2.0, generator=torch.Generator().manual_seed(0))
    ref = generator_loss(out, clf, gen.softmax_factor, gen.dot_weight, gen.div_weight).total
    zz = z.clone().requires_grad_(True)
    with torch.autocast(device.type, dtype=dtype):
        out = gen(zz, y, j_mean=2.0, generator=torch.Generator().manual_seed(0))
        val = generator_loss(out, clf, gen.softmax_factor, gen.dot_weight, gen.div_weight).total + 0 * node_loss(out)
    val.backward()
    assert val.dtype == torch.float32
    torch.testing.assert_close(val.detach(), ref.detach(), rtol=RTOL_GCA[dtype], atol=0)
    assert torch.isfinite(zz.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16-mixed", "16-mixed"])
def test_gcahng_step_under_cpu_autocast_within_tolerance(dtype):
    check_gca_autocast_step(torch.device("cpu"), dtype)

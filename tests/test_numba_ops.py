"""torch.autograd.Function wrappers of the kernels: gradcheck in float64, and whole models."""

import pytest
import torch
import torch.nn.functional as TF

import mobilenet_arch as A
import torch_impl
from mobilenet_arch import inverted_residual
from torch_impl.numba_ops import (
    DepthwiseConv2dFunction,
    FusedInvertedResidual,
    NumbaDepthwiseConv2d,
    fuse_inverted_residuals,
)


@pytest.mark.parametrize(
    "stride,padding,dilation,channels_last", [(1, 1, 1, False), (2, 1, 1, True), (2, 0, 2, False)]
)
def test_depthwise_function_gradcheck(stride, padding, dilation, channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 7, 6, dtype=torch.float64, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    w = torch.randn(5, 1, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: DepthwiseConv2dFunction.apply(a, b, stride, padding, dilation), (x, w)
    )
    out = DepthwiseConv2dFunction.apply(x, w, stride, padding, dilation)
    ref = TF.conv2d(x, w, None, stride, padding, dilation, 5)
    torch.testing.assert_close(out, ref)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_depthwise_module_inside_a_network():
    """The module's output and every gradient (its own weight's, upstream layers') equal torch's
    depthwise convolution with the same weight, in float64."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 1), NumbaDepthwiseConv2d(8, stride=2), torch.nn.ReLU()
    ).double()
    ref = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(8, 8, 3, 2, 1, groups=8, bias=False), torch.nn.ReLU()
    ).double()
    ref.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    dy = torch.randn(2, 8, 5, 5, dtype=torch.float64)  # a random upstream gradient
    out, out_ref = net(x), ref(x)
    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(out, list(net.parameters()), dy)
    grads_ref = torch.autograd.grad(out_ref, list(ref.parameters()), dy)
    for (name, _), g, g_ref in zip(net.named_parameters(), grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize(
    "cin,cout,stride,t", [(3, 2, 1, 1), (3, 4, 2, 2), (3, 3, 1, 2)]
)  # t=1, stride 2, residual
def test_fused_block_gradcheck_and_matches_torch(cin, cout, stride, t):
    torch.manual_seed(cin + cout + stride + t)
    block = torch_impl.models.build(inverted_residual(cin, cout, stride, t)).double()
    for p in block.parameters():  # BN weights away from their init of 1 and 0
        p.data.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, cin, 5, 4, dtype=torch.float64, requires_grad=True)
    fused = FusedInvertedResidual(block)
    params = [p for p in fused.parameters()]
    assert torch.autograd.gradcheck(lambda inp, *ps: fused(inp), (x, *params), eps=1e-6, atol=1e-5)
    # against the block's own torch layers, outputs and every gradient
    x2 = x.detach().clone().requires_grad_(True)
    y_fused = fused(x)
    dy = torch.randn_like(y_fused)
    grads_fused = torch.autograd.grad(y_fused, [x, *params], dy)
    y_ref = block(x2)
    grads_ref = torch.autograd.grad(y_ref, [x2, *params], dy)
    torch.testing.assert_close(y_fused, y_ref)
    for a, b in zip(grads_fused, grads_ref):
        torch.testing.assert_close(a, b)


# float32 against torch: BN folded into a per-channel affine (and SE's mean in float64)
@pytest.mark.parametrize("build,warmup", [(torch_impl.mobilenet_v2, 2), (torch_impl.mobilenet_v3_small, 3)])
def test_fused_model_keeps_state_dict_and_matches_in_eval(build, warmup):
    torch.manual_seed(warmup)
    model = build(width_mult=0.5, num_classes=10)
    for _ in range(warmup):  # running statistics away from their init (V3's momentum is 0.01)
        model(torch.randn(4, 3, 64, 64))
    model.eval()
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        fused = fuse_inverted_residuals(model)
        assert list(fused.state_dict()) == keys
        out = fused(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "cin,k,exp,cout,se,act,stride",
    [(4, 5, 12, 4, True, "HS", 1), (4, 3, 4, 6, True, "RE", 2), (3, 5, 9, 5, False, "HS", 2)],
)  # SE with the residual, SE without expansion, 5x5 stride 2
def test_fused_v3_block_gradcheck_and_matches_torch(cin, k, exp, cout, se, act, stride):
    torch.manual_seed(cin + k + exp + stride)
    block = torch_impl.models.build(A.bneck(cin, k, exp, cout, se, act, stride)).double()
    for p in block.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, cin, 6, 5, dtype=torch.float64, requires_grad=True)
    fused = FusedInvertedResidual(block)
    assert fused.activation == {"HS": "hardswish", "RE": "relu"}[act]
    params = list(fused.parameters())
    assert torch.autograd.gradcheck(lambda inp, *ps: fused(inp), (x, *params), eps=1e-6, atol=1e-5)
    x2 = x.detach().clone().requires_grad_(True)
    y_fused = fused(x)
    dy = torch.randn_like(y_fused)
    grads_fused = torch.autograd.grad(y_fused, [x, *params], dy)
    grads_ref = torch.autograd.grad(block(x2), [x2, *params], dy)
    torch.testing.assert_close(y_fused, block(x2))
    for a, b in zip(grads_fused, grads_ref):
        torch.testing.assert_close(a, b)


def test_fusing_refuses_a_layout_the_kernel_does_not_run():
    """A 7x7 depthwise has no fused kernel: a clear error, not a block that silently computes
    something else."""
    block = torch_impl.models.build(A.bneck(4, 7, 8, 4, True, "HS", 1))
    with pytest.raises(ValueError, match=r"a 3x3 or 5x5 depthwise.*\(7, 7\) depthwise"):
        FusedInvertedResidual(block)

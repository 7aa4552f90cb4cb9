"""Mutation check: does each module's own test file catch the bugs a rewrite plausibly makes?

``make mutants`` (or ``python -m tests.mutants [--only NAME ...] [--list]``) copies the
working tree to a temporary folder, then for each mutant below: replaces one snippet of
one file (the snippet must occur exactly once, so a mutant that no longer applies after a
change is reported, not skipped), runs that module's unit tests with the derandomized
``mutants`` hypothesis profile (ci's examples, no shrinking), stops at the first failure, and restores the file. A mutant
is *caught* when a test fails; it *survives* when its module's tests all pass. The exit
status is 1 if any mutant survived or no longer applies.

When a kernel changes, add the bugs its new code could have to ``MUTANTS``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # the file, relative to the repository root
    before: str  # a snippet occurring exactly once in the file
    after: str
    tests: tuple  # the module's own unit test files
    why: str  # the bug, in words


BN_K, DW_V, DW_K, BLOCK, PW_K = (
    "kernels/batchnorm.py",
    "kernels/depthwise_versions.py",
    "kernels/depthwise.py",
    "kernels/fused_block.py",
    "kernels/pointwise.py",
)
SE_K, T_SE = "kernels/se.py", ("tests/test_kernels_se.py",)
QG_K, VNNI_K, QDW_K, QOPS_K = (
    "kernels/qgemm.py",
    "kernels/_vnni.py",
    "kernels/qdepthwise.py",
    "kernels/qops.py",
)
QOPS_R, AFF_R = "numpy_impl/quant/ops.py", "numpy_impl/quant/affine.py"
T_QGEMM, T_QDW = ("tests/test_kernels_qgemm.py",), ("tests/test_kernels_qdepthwise.py",)
T_QOPS = ("tests/test_kernels_qops.py",)
T_QREF = ("tests/test_quant_ops.py", "tests/test_quant_affine.py")
T_BN, T_PW, T_CONV, T_DW, T_BLOCK = (
    ("tests/test_kernels_batchnorm.py",),
    ("tests/test_kernels_pointwise.py", "tests/test_kernels_gemm.py"),
    ("tests/test_kernels_conv.py",),
    ("tests/test_kernels_depthwise.py", "tests/test_kernels_depthwise_versions.py"),
    ("tests/test_kernels_fused_block.py",),
)

MUTANTS = [
    # --- kernels/batchnorm.py: batch norm with its activation fused ---------------------------------
    Mutant("bn-relu6-mask-no-upper", BN_K, "return d if (z > 0) & (z < 6) else zero", "return d if z > 0 else zero", T_BN,
           "ReLU6 backward passes the gradient at the upper clamp"),
    Mutant("bn-relu-mask-at-zero", BN_K, "return d if z > 0 else zero\n", "return d if z >= 0 else zero\n", T_BN,
           "ReLU backward passes the gradient where the output is exactly 0"),
    Mutant("bn-relu-no-clamp", BN_K, "return max(v, 0)", "return v", T_BN,
           "the fused ReLU does not clamp"),
    Mutant("bn-relu6-no-upper-clamp", BN_K, "return min(max(v, 0), 6)", "return max(v, 0)", T_BN,
           "the fused ReLU6 forgets its upper clamp"),
    Mutant("bn-momentum-ignored", BN_K, "running_mean *= 1 - momentum", "running_mean *= 0.9", T_BN,
           "the running mean decays with torch's default momentum whatever momentum is"),
    Mutant("bn-eps-ignored", BN_K, "inv_std = 1.0 / np.sqrt(var + eps)", "inv_std = 1.0 / np.sqrt(var + 1e-5)",
           T_BN, "eps fixed at torch's default"),
    Mutant("bn-biased-running-var", BN_K, "(momentum * var * (m / (m - 1)))", "(momentum * var)", T_BN,
           "the running variance is not the unbiased estimate"),
    Mutant("bn-mean-without-shift", BN_K, "mu = k + s / m", "mu = s / m", T_BN,
           "the shift of the one-pass statistics is not added back"),
    Mutant("bn-dx-drops-xhat-term", BN_K,
           "out[c] = a[c] * (g - b1[c] - (xr[c] - mu[c]) * inv_std[c] * b2[c])",
           "out[c] = a[c] * (g - b1[c])", T_BN, "channels-last dx loses the xhat * mean(g xhat) term"),
    Mutant("bn-planes-dx-drops-mean", BN_K,
           "dx[n, c, p] = a[c] * (g - b1[c] - (x[n, c, p] - mu[c]) * inv_std[c] * b2[c])",
           "dx[n, c, p] = a[c] * (g - (x[n, c, p] - mu[c]) * inv_std[c] * b2[c])", T_BN,
           "NCHW dx loses the mean(g) term"),
    Mutant("bn-sums-unmasked", BN_K, "            a1[c] += g\n", "            a1[c] += dr[c]\n", T_BN,
           "dbias and the mean term sum the gradient before the activation's mask"),
    Mutant("bn-sums-relu6-as-relu", BN_K, "_grad_sums_chunk(dy, x, zs, zb, mu, inv_std, 2, s1, s2, r0, r1)",
           "_grad_sums_chunk(dy, x, zs, zb, mu, inv_std, 1, s1, s2, r0, r1)", T_BN,
           "the sums' copy for ReLU6 masks as ReLU (the gradient passes above 6)"),
    Mutant("bn-dx-hardswish-as-identity", BN_K, "_dx_chunk(dy, x, zs, zb, mu, inv_std, 3, a, b1, b2, dx, r0, r1)",
           "_dx_chunk(dy, x, zs, zb, mu, inv_std, 0, a, b1, b2, dx, r0, r1)", T_BN,
           "dx's copy for hard-swish passes the gradient unscaled"),
    Mutant("bn-first-chunk-only", BN_K, "return part.sum(axis=0)", "return part[0]", T_BN,
           "the per-thread partial sums are not reduced"),
    Mutant("bn-running-mean-not-in-place", BN_K, "            running_mean += (momentum * mu).astype(x.dtype)\n",
           "            running_mean = running_mean + (momentum * mu).astype(x.dtype)\n", T_BN,
           "the running mean is updated in a copy, not in place"),
    # --- kernels/depthwise_versions.py and depthwise.py ----------------------------------------------
    Mutant("dw7-row-padding-off-by-one", DW_V, "        h0 = ho * sh - ph\n        x0 = x[n, h0] if 0 <= h0 < H else zero  # (W, C)",
           "        h0 = ho * sh - ph + 1\n        x0 = x[n, h0] if 0 <= h0 < H else zero  # (W, C)", T_DW,
           "the 3x3 forward reads its rows one below"),
    Mutant("dw7-edge-column", DW_V, "                    if 0 <= a + j < W:\n                        for c in range(C):\n                            orow[wo, c] +=",
           "                    if 0 <= a + j < W - 1:\n                        for c in range(C):\n                            orow[wo, c] +=",
           T_DW, "the 3x3 forward drops the last column at the border"),
    Mutant("dw4-flip-pads-swapped", DW_V, "fwd_v7(dout, np.ascontiguousarray(w[::-1, ::-1]), dx, 1, 1, 2 - ph, 2 - pw, 1, 1)",
           "fwd_v7(dout, np.ascontiguousarray(w[::-1, ::-1]), dx, 1, 1, 2 - pw, 2 - ph, 1, 1)", T_DW,
           "stride-1 dx uses the padding of the other axis"),
    Mutant("dw5-flip-pads-swapped", DW_V, "fwd_v9(dout, np.ascontiguousarray(w[::-1, ::-1]), dx, 1, 1, 2 - ph, 2 - pw, 1, 1)",
           "fwd_v9(dout, np.ascontiguousarray(w[::-1, ::-1]), dx, 1, 1, 2 - pw, 2 - ph, 1, 1)", T_DW,
           "version 5's stride-1 dx uses the padding of the other axis"),
    Mutant("dw8-second-row-reads-third", DW_V, "x3[a + 1, c] * w21 + x3[a + 2, c] * w22)  # fmt: skip",
           "x3[a + 1, c] * w21 + x2[a + 2, c] * w22)  # fmt: skip", T_DW,
           "the second of two output rows takes one tap from the row above"),
    Mutant("dw8-odd-rows-overwrite", DW_V,
           "if ho + 1 < Ho else np.empty((Wo, C), dtype=out.dtype)  # odd Ho: a spare row",
           "if ho + 1 < Ho else out[n, ho]  # odd Ho: a spare row", T_DW,
           "with an odd number of output rows the last row is overwritten by the row after it"),
    Mutant("dw8-stride-3-as-2", DW_V, "elif sh == 2:  # y0 is x2", "elif sh >= 2:  # y0 is x2", T_DW,
           "the two-row kernel's stride-2 row sharing is used at larger strides"),
    Mutant("dw9-2x2-corner-tap", DW_V, "e1 * w20 + e2 * w21 + e3 * w22)  # fmt: skip",
           "e1 * w20 + e2 * w21 + e2 * w22)  # fmt: skip", T_DW,
           "the 2x2 block's bottom-right pixel reads a tap one column short"),
    Mutant("dw9-odd-column-not-finished", DW_V, "            if (hi - lo) % 2:\n", "            if False:\n", T_DW,
           "the 2x2 blocks leave an odd last interior column unwritten"),
    Mutant("dw10-flat-last-tap", DW_V, "+ f0 * w10 + f1 * w11 + f2 * w12 + x5[i] * w20 + x5[j] * w21 + x5[m] * w22)",
           "+ f0 * w10 + f1 * w11 + f2 * w12 + x5[i] * w20 + x5[j] * w21 + x5[j] * w22)", T_DW,
           "the flat kernel's fourth row reads its last tap one pixel short"),
    Mutant("dw10-spare-row-is-real", DW_V,
           "spare = np.empty((Wo, C), dtype=out.dtype) if ho + 3 >= Ho else out[n, ho]",
           "spare = out[n, ho]", T_DW,
           "the rows past the last of a band of four overwrite the band's first row"),
    Mutant("dw10-pixel-remainder-skipped", DW_V, "_rows2_s1(x2, x3, x4, x5, w, o2, o3, stop, hi, 1, pw)",
           "_rows2_s1(x2, x3, x4, x5, w, o2, o3, hi, hi, 1, pw)", T_DW,
           "the interior columns left after the flat steps are not written in rows 3 and 4"),
    Mutant("dw7-flat-tap", DW_V, "q[8 * DW_LANES + k] += h0 * d2 + h1 * e2 + h2 * f2 + h3 * x5[m]",
           "q[8 * DW_LANES + k] += h0 * d2 + h1 * e2 + h2 * f2 + h3 * x5[j]", T_DW,
           "the flat dw takes its last tap of the fourth row one column short"),
    Mutant("dw7-pixel-tiles-not-summed", DW_V, ".reshape(3, 3, DW_LANES // C, C).sum(axis=2)",
           ".reshape(3, 3, DW_LANES // C, C)[:, :, 0]", T_DW,
           "the flat dw keeps the first pixel's lanes of each tile only"),
    Mutant("dw5-4px-last-tap", DW_V, "pi[2, c] += g0 * u2 + g1 * u3 + g2 * u4 + g3 * u5",
           "pi[2, c] += g0 * u2 + g1 * u3 + g2 * u4 + g3 * u4", T_DW,
           "dw from four pixels pairs the fourth with the wrong column"),
    Mutant("dw5-tail-columns-skipped", DW_V, "for k in range(lo + Wo - wo):", "for k in range(lo + Wo - hi):", T_DW,
           "dw skips the interior columns left over after the groups of four"),
    Mutant("dw6-second-row-filter", DW_V, "drow[wi, c] = ga[u, c] * w[ia, 1, c] + gb[u, c] * w[ib, 1, c]",
           "drow[wi, c] = ga[u, c] * w[ia, 1, c] + gb[u, c] * w[ia, 1, c]", T_DW,
           "stride-2 dx multiplies the second dout row by the first one's filter row"),
    Mutant("dw6-row-parity", DW_V, "if (hi + ph) % 2 == 0:  # filter rows 0 and 2", "if (hi + ph) % 2 == 1:  # filter rows 0 and 2",
           T_DW, "stride-2 dx takes the row parity the wrong way round"),
    Mutant("dw6-even-taps-swapped", DW_V, "u, v = q // 2, q // 2 - 1", "u, v = q // 2 - 1, q // 2", T_DW,
           "stride-2 dx pairs filter columns 0 and 2 with each other's dout column"),
    Mutant("dw4-tap-table-stride", DW_V, "if num >= 0 and num % stride == 0 and num // stride < n_out:",
           "if num >= 0 and num // stride < n_out:", T_DW,
           "the strided dx tap table ignores the stride's phase"),
    Mutant("dw4-chunk-drops-a-row", DW_V,
           "        for r in range(t * rows // T, (t + 1) * rows // T):\n            n, ho = r // Ho, r % Ho\n            h0 = ho * sh - ph\n            x0 = x[n, h0]",
           "        for r in range(t * rows // T, max(t * rows // T, (t + 1) * rows // T - 1)):\n            n, ho = r // Ho, r % Ho\n            h0 = ho * sh - ph\n            x0 = x[n, h0]",
           T_DW, "each chunk of the 3x3 dw reduction skips its last output row"),
    Mutant("dw4-chunks-not-reduced", DW_V,
           "dtype=x.dtype)\n    _bwd_dw_3x3(dout, x, partial, sh, sw, ph, pw)\n    np.sum(partial, axis=0, out=dw)",
           "dtype=x.dtype)\n    _bwd_dw_3x3(dout, x, partial, sh, sw, ph, pw)\n    dw[...] = partial[0]", T_DW,
           "the 3x3 dw keeps the first chunk's partial sum only"),
    Mutant("dw5-chunks-not-reduced", DW_V,
           "        _bwd_dw_3x3(dout, x, partial, sh, sw, ph, pw)\n    np.sum(partial, axis=0, out=dw)",
           "        _bwd_dw_3x3(dout, x, partial, sh, sw, ph, pw)\n    dw[...] = partial[0]", T_DW,
           "version 5's dw keeps the first chunk's partial sum only"),
    Mutant("dw-wo-range-short", DW_V, "hi = min(Wo, (W - 1 - off) // sw + 1)", "hi = min(Wo, (W - 1 - off) // sw)",
           T_DW, "the in-bounds range of output columns misses its last column"),
    Mutant("dw2-weight-grad-not-accumulated", DW_V, "                            acc += x[n, c, hi, wo * sw + base] * g",
           "                            acc = x[n, c, hi, wo * sw + base] * g", T_DW,
           "NCHW dw keeps the last product instead of the sum"),
    Mutant("dw-filter-axes-swapped", DW_K, "wk.transpose(1, 2, 0) if cl else wk", "wk.transpose(2, 1, 0) if cl else wk",
           T_DW, "the channels-last filter has kh and kw swapped"),
    Mutant("dw-strides-swapped", DW_K, "args = (g.stride[0], g.stride[1],", "args = (g.stride[1], g.stride[0],", T_DW,
           "vertical and horizontal strides swapped"),
    # --- kernels/fused_block.py ----------------------------------------------------------------------
    Mutant("block-pool-chunk-dropped", BLOCK, "for k in range(1, K):", "for k in range(1, K - 1):", T_BLOCK,
           "one-pool inference drops the last hidden-channel chunk from the sum"),
    Mutant("block-pool-no-residual", BLOCK, "        if residual:\n            o += x2[j0:j1]",
           "        if False:\n            o += x2[j0:j1]", T_BLOCK,
           "one-pool inference forgets the residual in row tiles"),
    Mutant("block-pool-short-halo", BLOCK, "min(H, (ho1 - 1) * stride - k // 2 + k)",
           "min(H, (ho1 - 1) * stride - k // 2 + k - 1)", T_BLOCK,
           "one-pool inference's band misses its bottom halo row"),
    Mutant("block-eval-no-residual", BLOCK, "            o += xr[n0:n1, ho0:ho1].reshape(-1, c)",
           "            pass", T_BLOCK, "the eval path forgets the residual"),
    Mutant("block-backward-no-residual", BLOCK, "        g = g + dout\n", "        g = g\n", T_BLOCK,
           "the backward forgets the residual's gradient"),
    Mutant("block-dw-bn-default-momentum-eps", BLOCK,
           'h, cache["bn1"] = bn.forward(h, *bns[1], True, momentum, eps, activation)',
           'h, cache["bn1"] = bn.forward(h, *bns[1], True, 0.1, 1e-5, activation)', T_BLOCK,
           "the depthwise BN of the training path uses the default momentum and eps"),
    Mutant("block-eval-eps-default", BLOCK, "sd, bd = _bn_affine(bns[1], eps, dt)\n    wp = project_w",
           "sd, bd = _bn_affine(bns[1], 1e-5, dt)\n    wp = project_w", T_BLOCK,
           "the eval path's depthwise BN ignores eps"),
    Mutant("block-pool-eps-default", BLOCK, "sd, bd = _bn_affine(bns[1], eps, dt)\n    pw = np.ascontiguousarray",
           "sd, bd = _bn_affine(bns[1], 1e-5, dt)\n    pw = np.ascontiguousarray", T_BLOCK,
           "the one-pool eval path's depthwise BN ignores eps"),
    Mutant("block-eval-eps-outside-sqrt", BN_K, "scale = weight / np.sqrt(var + eps)", "scale = weight / (np.sqrt(var) + eps)",
           T_BLOCK, "eps added outside the square root"),
    Mutant("block-tile-halo-short", BLOCK, "min(H, (ho1 - 1) * stride - p + k)", "min(H, (ho1 - 1) * stride - p + k - 1)", T_BLOCK,
           "a band of output rows reads one input row too few"),
    Mutant("block-eval-dw-relu6-no-upper", BLOCK,
           "w[2, 2, c]\n                    )  # fmt: skip\n                    orow[wo, c] = _act(v * scale[c] + shift[c], act)",
           "w[2, 2, c]\n                    )  # fmt: skip\n                    orow[wo, c] = max(v * scale[c] + shift[c], 0)", T_BLOCK,
           "the eval depthwise ReLU6 forgets its upper clamp in the interior"),
    Mutant("block-recompute-stride", BLOCK, 'd = dw.forward(h, dw_w, cache["stride"], dw_w.shape[-1] // 2)',
           'd = dw.forward(h, dw_w, 1, dw_w.shape[-1] // 2)', T_BLOCK,
           "the recompute path replays the depthwise at stride 1"),
    Mutant("block-train-eps-unchecked", BLOCK, 'if check_number(fn, "eps", eps, 0.0) == 0.0:', "if False:", T_BLOCK,
           "the training entry lets eps = 0 through to the unchecked batch norms (a division by zero)"),
    Mutant("block-backward-dout-unchecked", BLOCK, '    check_shape(fn, "dout", dout, out_shape)\n', "", T_BLOCK,
           "the backward takes a dout of the wrong shape into the unchecked sub-ops"),
    Mutant("block-se-hardsigmoid-shifted", BLOCK, "min(max(g.flat[i] + 3, 0), 6) / 6", "min(max(g.flat[i] + 2, 0), 6) / 6",
           T_BLOCK, "the eval squeeze-and-excite's hard-sigmoid is shifted"),
    Mutant("block-se-squeeze-keeps-one-tile", BLOCK, "s[n0 + b, h0 + c] += sums[t, b, c]",
           "s[n0 + b, h0 + c] = sums[t, b, c]", T_BLOCK, "the eval squeeze keeps the last row tile's sum only"),
    Mutant("block-se-scale-wrong-image", BLOCK, "sc = scale[n0 + r // per_img]", "sc = scale[n0]", T_BLOCK,
           "a tile of several images scales them all by the first one's SE"),
    Mutant("block-dw5-taps-transposed", BLOCK, "acc[c] += xrow[a + j, c] * w[i, j, c]", "acc[c] += xrow[a + j, c] * w[j, i, c]",
           T_BLOCK, "the eval 5x5 depthwise reads its filter transposed at the border"),
    Mutant("block-dw5-interior-row-weights", BLOCK, "_taps5(x1, a, w[1], c) + _taps5(x2, a, w[2], c)",
           "_taps5(x1, a, w[2], c) + _taps5(x2, a, w[1], c)", T_BLOCK,
           "the eval 5x5 depthwise swaps two rows of its filter in the interior"),
    Mutant("block-backward-se-skipped", BLOCK, '    if cache["se"] is not None:\n        g, *dse',
           '    if False:\n        g, *dse', T_BLOCK, "the backward skips squeeze-and-excite"),
    # --- kernels/pointwise.py ------------------------------------------------------------------------
    Mutant("pw-pool-dw-one-chunk", "kernels/_gemm.py", "for t in range(1, T):",
           "for t in range(1, 1):", T_PW, "a^T b on the pool keeps the first thread's partial sum only"),
    Mutant("pw-pool-rows-short", "kernels/_gemm.py", "r0, r1 = t * M // blocks, (t + 1) * M // blocks",
           "r0, r1 = t * M // blocks, (t + 1) * M // blocks - (t + 1 == blocks)", T_PW,
           "the row-split GEMM leaves the last row unwritten"),
    Mutant("conv-im2col-no-vertical-dilation", "kernels/conv.py", "xp[n, ho * sh + i * dh, wo * sw + j * dw, c]",
           "xp[n, ho * sh + i, wo * sw + j * dw, c]", T_CONV, "the stem's im2col ignores the vertical dilation"),
    Mutant("conv-tile-copy-shifted", "kernels/conv.py", "src = ((n * H + h) * W + v0) * C",
           "src = ((n * H + h) * W + v0 + 1) * C", T_CONV, "the forward's contiguous tap rows start one pixel late"),
    Mutant("conv-tiles-drop-last-row", "kernels/conv.py", "r0, r1 = t * rows, min(N * Ho, (t + 1) * rows)",
           "r0, r1 = t * rows, min(N * Ho, (t + 1) * rows - 1)", T_CONV, "each forward tile leaves its last row unwritten"),
    Mutant("tn-cols-offset", "kernels/_gemm.py", "            out[:, n0:n1] = tmp\n\n\ndef matmul_tn",
           "            out[:, 0 : n1 - n0] = tmp\n\n\ndef matmul_tn", T_PW, "a^T b for few rows writes every column block at the start"),
    Mutant("k-partials-last-row-dropped", "kernels/_gemm.py", "k0, k1 = t * K // T, (t + 1) * K // T",
           "k0, k1 = t * K // T, (t + 1) * K // T - (t + 1 == T)", T_PW, "a @ b split over b's rows drops its last row"),
    Mutant("fold-epilogue-no-shift", "kernels/_gemm.py", "o[r, j] = _act(o[r, j] * scale[c0 + j] + shift[c0 + j], act)",
           "o[r, j] = _act(o[r, j] * scale[c0 + j], act)", ("tests/test_kernels_folded_bn.py",), "the folded batch norm forgets its shift"),
    Mutant("fold-epilogue-column-offset", "kernels/_gemm.py", "_epilogue(tmp, scale, shift, act, n0)",
           "_epilogue(tmp, scale, shift, act, 0)", ("tests/test_kernels_folded_bn.py",), "a column block of the product takes the first block's channels"),
    Mutant("fold-conv-bias-dropped", "kernels/conv.py", "affine = affine[0], affine[1] + b * affine[0]",
           "affine = affine[0], affine[1]", ("tests/test_kernels_folded_bn.py",), "the convolution's bias is lost when a batch norm is folded in"),
    Mutant("fold-backward-not-rerun", "numpy_impl/nn.py", "if self._folded_from is not None and not all(",
           "if False and not all(", ("tests/test_kernels_folded_bn.py",), "backward after a folded eval forward uses stale batch-norm caches"),
    Mutant("conv-stem-input-grad-skipped-always", "kernels/conv.py", "    if not input_grad:\n        return None",
           "    if True:\n        return None", ("tests/test_models.py",),
           "the convolution backward drops dx even when asked for it"),
    Mutant("block-bands-drop-last-row", BLOCK, "cuts = [Ho * i // bands for i in range(bands + 1)]",
           "cuts = [Ho * i // bands for i in range(bands)] + [Ho - 1]", T_BLOCK,
           "evened-out bands leave the last output row unwritten"),
    Mutant("pw-cols-last-column-unwritten", "kernels/_gemm.py",
           "n0, n1 = t * N // blocks, (t + 1) * N // blocks\n        if n1 > n0:\n            tmp = np.empty((a.shape[0]",
           "n0, n1 = t * N // blocks, (t + 1) * N // blocks - (t + 1 == blocks)\n        if n1 > n0:\n            tmp = np.empty((a.shape[0]", T_PW,
           "the column-split GEMM (few rows) leaves the last column unwritten"),
    Mutant("pw-pair-blocks-not-summed", "kernels/_gemm.py", "            p += tmp", "            p[:] = tmp", T_PW,
           "the one-pass 1x1 backward keeps each thread's last block of dw only"),
    Mutant("pw-nchw-dw-wrong-axes", PW_K, "np.tensordot(d3, x3, axes=([0, 2], [0, 2]))",
           "np.tensordot(d3, x3, axes=([0, 2], [0, 2])).T.reshape(-1, x3.shape[1])", T_PW,
           "the NCHW weight gradient comes out transposed (and reshaped to fit)"),
    # --- kernels/se.py: squeeze-and-excite's passes over the map --------------------------------------
    Mutant("se-mean-is-a-sum", SE_K, "out[n, c] = acc[c] / P", "out[n, c] = acc[c]", T_SE,
           "the squeeze sums the map instead of averaging it"),
    Mutant("se-mean-skips-last-pixel", SE_K, "        for p in range(P):\n            for c in range(C):\n                acc[c] += x3[n, p, c]",
           "        for p in range(P - 1):\n            for c in range(C):\n                acc[c] += x3[n, p, c]", T_SE,
           "the squeeze's sum stops one pixel short"),
    Mutant("se-scale-first-channel", SE_K, "                out[n, p, c] = x3[n, p, c] * scale[n, c]\n",
           "                out[n, p, c] = x3[n, p, c] * scale[n, 0]\n",
           T_SE, "every channel is excited by the first channel's scale"),
    Mutant("se-dscale-drops-x", SE_K, "acc[c] += np.float64(d3[n, p, c]) * x3[n, p, c]", "acc[c] += np.float64(d3[n, p, c])",
           T_SE, "the scale's gradient sums dout alone"),
    Mutant("se-dx-drops-mean-path", SE_K, "out[n, p, c] = d3[n, p, c] * scale[n, c] + dmean[n, c]",
           "out[n, p, c] = d3[n, p, c] * scale[n, c]", T_SE, "dx loses the gradient through the squeeze's mean"),
    Mutant("se-dmean-by-height", SE_K, "ds / x.dtype.type(h * w)", "ds / x.dtype.type(h)", T_SE,
           "the mean's gradient is spread over the rows only"),
    Mutant("se-dw2-from-pre", SE_K, 'dh, dw2, db2 = linear_backward(dg, cache["h"], cache["w2"])',
           'dh, dw2, db2 = linear_backward(dg, cache["pre"], cache["w2"])', T_SE,
           "the expand layer's weight gradient uses the hidden units before their ReLU"),
    # --- int8: kernels/qgemm.py, kernels/qdepthwise.py, kernels/qops.py, kernels/_vnni.py ---------------
    Mutant("q-requant-round-half-away", QG_K, "v = np.int64(np.rint(np.float32(acc) * M)) + zp",
           "v = np.int64(np.trunc(np.float32(acc) * M + np.copysign(np.float32(0.5), np.float32(acc) * M))) + zp",
           T_QGEMM, "requantization rounds half away from zero, not to even"),
    Mutant("q-requant-no-saturation", QG_K, "    return min(max(v, lo), hi)", "    return v", T_QGEMM,
           "the requantized value is not clamped to the output's range (it wraps in uint8)"),
    Mutant("q-gemm-v3-per-tensor-M", QG_K, "requant(acc[r, j] + bias[n0 + j], M[n0 + j], zp, lo, hi)",
           "requant(acc[r, j] + bias[n0 + j], M[0], zp, lo, hi)", T_QGEMM,
           "one multiplier for every output channel where each has its own"),
    Mutant("q-gemm-v3-tail-rows", QG_K, "for r in range(min(MR, P - p0)):", "for r in range(min(MR, P - p0) - 1):",
           T_QGEMM, "the last row of every tile is not written"),
    Mutant("q-gemm-v4-short-rows", QG_K, "dpbusd_row_q(out, x4, t // NB, packed, t % NB, bias, M, zp, lo, hi)",
           "dpbusd_row_q(out, x4, 0, packed, t % NB, bias, M, zp, lo, hi)", T_QGEMM,
           "with fewer rows than a tile, every row gets the first row's outputs"),
    Mutant("q-vnni-epilogue-no-bias", VNNI_K, "f = builder.fmul(builder.sitofp(builder.add(acc, bv), _VF), mv)",
           "f = builder.fmul(builder.sitofp(acc, _VF), mv)", T_QGEMM,
           "the microkernel's requantization forgets the (zero-point-folded) bias"),
    Mutant("q-fold-bias-no-zero-point", QG_K, "folded = b.astype(np.int64) - np.int64(x_zero_point) *",
           "folded = b.astype(np.int64) - 0 *", T_QGEMM,
           "the input's zero point is dropped from the GEMM (its column-sum term never folded in)"),
    Mutant("q-pack-weights-k-order", QG_K, "blocks = padded.reshape(NB, NR, K4, 4).transpose(0, 2, 1, 3)",
           "blocks = padded.reshape(NB, NR, 4, K4).transpose(0, 3, 1, 2)", T_QGEMM,
           "packed weights take the 4 bytes of a word from the wrong k"),
    Mutant("q-dw-zero-point-dropped", QDW_K,
           "acc[c] += np.int16((np.int16(x[n, ih, iw, c]) - z) * wt[i, j, c])",
           "acc[c] += np.int16(np.int16(x[n, ih, iw, c]) * wt[i, j, c])", T_QDW,
           "the checked per-pixel path multiplies raw bytes: the zero point is never subtracted"),
    Mutant("q-dw-v3-zero-point-dropped", QDW_K, "s += np.int16((np.int16(win[i, j, u]) - z) * wt[i, j, u])",
           "s += np.int16(np.int16(win[i, j, u]) * wt[i, j, u])", T_QDW,
           "the unrolled interior path multiplies raw bytes"),
    Mutant("q-dw-v3-taps-transposed", QDW_K, "s += np.int16((np.int16(win[i, j, u]) - z) * wt[i, j, u])",
           "s += np.int16((np.int16(win[j, i, u]) - z) * wt[i, j, u])", T_QDW,
           "the unrolled taps read the window transposed"),
    Mutant("q-dw-flat-shift", QDW_K, "shift = (j - pad) * C", "shift = (j - pad) * C + 1", T_QDW,
           "the flat-row kernel reads each tap one channel off"),
    Mutant("q-im2col-pad-with-raw-zero", QOPS_K, "    fw = f | (f << 8) | (f << 16) | (f << 24)\n",
           "    fw = np.int32(0)\n", T_QOPS, "a padded tap holds 0, not the zero point (real 0 only when z = 0)"),
    Mutant("q-overflow-unchecked", QOPS_K, "if taps * 255 * int(np.abs(w).max(initial=0))",
           "if 0 * taps * 255 * int(np.abs(w).max(initial=0))", T_QOPS,
           "weights that can overflow the int32 accumulator are accepted"),
    Mutant("q-add-one-multiplier", QOPS_K, "+ (np.int64(b) - zb) * mb)", "+ (np.int64(b) - zb) * ma)", T_QOPS,
           "the residual add rescales both inputs by the first one's scale"),
    Mutant("q-pool-round-half-up", QOPS_K, "up = 2 * r > n_px or (2 * r == n_px and q % 2 == 1)",
           "up = 2 * r >= n_px", T_QOPS, "the integer average rounds ties up, not to even"),
    Mutant("q-dw-v4-fold-no-zero-point", QDW_K, "(np.asarray(bias, np.int64) - np.int64(zx) * wt.astype",
           "(np.asarray(bias, np.int64) - 0 * wt.astype", T_QDW,
           "version 4 multiplies raw bytes but never subtracts the zero point's term"),
    Mutant("q-dw-v4-pad-with-raw-zero", VNNI_K, "v = builder.select(builder.and_(row_in, col_in), v, zsplat)",
           "v = builder.select(builder.and_(row_in, col_in), v, zero16)", T_QDW,
           "a tap in the padding reads integer 0, not the zero point (real 0)"),
    Mutant("q-dw-v4-skip-last-channels", QDW_K, "blocks = -(-C // LANES) if C >= LANES else 0",
           "blocks = C // LANES if C >= LANES else 0", T_QDW,
           "the channels past the last whole vector (C % 16) are never written"),
    Mutant("q-dw-v4-taps-across-channels", VNNI_K, "[16 * t + l for l in range(16) for t in range(4)]",
           "[4 * l + t for l in range(16) for t in range(4)]", T_QDW,
           "the byte transpose takes a word's 4 taps from 4 neighbouring channels of one column"),
    Mutant("q-lookup64-halves-swapped", VNNI_K, "builder.store(builder.select(top, high, low)",
           "builder.store(builder.select(top, low, high)", T_QOPS,
           "the vector table lookup takes entries 0-127 from the table's upper half"),
    Mutant("q-quantize-input-no-clamp", QOPS_K, "v = min(max(v, flo), fhi) if v == v else",
           "v = v if v == v else", T_QOPS, "images outside the input's range wrap around in uint8"),
    Mutant("q-block-band-short-halo", QOPS_K, "min(H, (ho1 - 1) * stride - pad + K)",
           "min(H, (ho1 - 1) * stride - pad + K - 1)", T_QOPS,
           "a tile's band misses its bottom halo row (read as padding)"),
    Mutant("q-block-add-multipliers-swapped", QOPS_K, "(qx.scale / qo.scale, qb.scale / qo.scale) if add",
           "(qb.scale / qo.scale, qx.scale / qo.scale) if add", T_QOPS,
           "the fused block's residual add scales each input by the other's multiplier"),
    # --- kernels/_threads.py: flags every float kernel shares ------------------------------------------
    Mutant("fastmath-reassoc", "kernels/_threads.py", 'FASTMATH = {"nnan", "ninf", "nsz", "arcp", "contract", "afn"}',
           'FASTMATH = {"nnan", "ninf", "nsz", "arcp", "contract", "afn", "reassoc"}',
           ("tests/test_kernels_cache_state.py",),
           "LLVM may reassociate: a kernel compiled afresh and one loaded from the cache round differently"),
    Mutant("cache-stale-kept", "kernels/_cache.py", "        if marker.read_text() == digest:",
           "        if marker.read_text() or True:", ("tests/test_kernels_cache_state.py",),
           "cached kernels built from other sources of the package are kept"),
    # --- int8: the NumPy reference (numpy_impl/quant) -------------------------------------------------
    Mutant("qref-pad-with-raw-zero", QOPS_R, "xs = np.pad(x.astype(np.int64) - zp, ((0, 0), (0, 0), (p, p), (p, p)))",
           "xs = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (p, p), (p, p))) - zp", T_QREF,
           "the reference pads with integer 0 (real -s z), not the zero point (real 0)"),
    Mutant("qref-requant-round-half-away", AFF_R, "y = np.rint(acc.astype(np.float32) * M).astype(np.int64) + int(zero_point)",
           "y = np.trunc(acc.astype(np.float32) * M + np.copysign(0.5, acc * M)).astype(np.int64) + int(zero_point)",
           T_QREF, "reference requantization rounds half away from zero"),
    Mutant("qref-per-tensor-weights", AFF_R, "    if not per_channel:\n", "    if True:\n", T_QREF,
           "weights quantized per tensor where per channel is asked"),
    Mutant("qref-srdhm-nudge", AFF_R, "nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))", "nudge = 1 << 30", T_QREF,
           "SaturatingRoundingDoublingHighMul rounds negative products the positive way"),
    Mutant("qref-no-saturation", AFF_R, "    return np.clip(y, qmin, qmax).astype(np.int32)\n\n\ndef _check_acc",
           "    return y.astype(np.int32)\n\n\ndef _check_acc", T_QREF, "reference requantization does not clamp"),
    # --- a batch in parts: data-parallel training -----------------------------------------------------
    Mutant("parts-total-reversed", "numpy_impl/parts.py", "out = every[0].copy()\n        for a in every[1:]:",
           "out = every[-1].copy()\n        for a in every[-2::-1]:", ("tests/test_parts.py",),
           "the parts are added last to first: every process agrees, but not with the documented order"),
    Mutant("parts-bn-local-count", BN_K, "m = parts.batch * (m // x.shape[0])  # values per channel in the global batch",
           "m = m  # values per channel in this process's rows", ("tests/test_distributed.py",),
           "the kernels' synchronised batch norm divides the global sums by this process's count"),
    Mutant("parts-conv-forward-whole-batch", "numpy_impl/nn.py",
           "        if self._parted():  # a GEMM's rows may round by the shape of their block: a part's own",
           "        if False:", ("tests/test_parts.py",),
           "convolutions run on a process's whole share at once: a GEMM's rows round by their block's shape"),
    Mutant("parts-dropout-local-index", "numpy_impl/nn.py", "np.random.default_rng([step, first + i])",
           "np.random.default_rng([step, i])", ("tests/test_parts.py",),
           "a part's dropout mask depends on its place in the process, not in the batch"),
    Mutant("parts-loss-local-count", "mobilenet/training/numpy_runner.py",
           "loss, dout, dhead, correct = self._loss(o, t, total=parts.batch)",
           "loss, dout, dhead, correct = self._loss(o, t)",
           ("tests/test_parts.py",), "each part's loss is its own mean, not its share of the batch's"),
    # --- the NumPy reference -------------------------------------------------------------------------
    Mutant("ref-bn-eps-ignored", "numpy_impl/functional/norm.py", "inv_std = 1.0 / np.sqrt(var + eps)",
           "inv_std = 1.0 / np.sqrt(var + 1e-5)", ("tests/test_norm.py",), "reference BN with eps fixed"),
    Mutant("ref-bn-momentum-ignored", "numpy_impl/functional/norm.py", "running_var *= 1 - momentum",
           "running_var *= 0.9", ("tests/test_norm.py",), "reference running variance ignores momentum"),
    Mutant("ref-relu6-mask", "numpy_impl/functional/basic.py", "np.where((x > 0) & (x < 6), dout, 0)",
           "np.where((x >= 0) & (x < 6), dout, 0)", ("tests/test_basic.py",),
           "reference ReLU6 backward passes the gradient at 0"),
    Mutant("ref-conv-output-size", "numpy_impl/functional/conv.py", "out_hw = ((hp - span[0]) // stride[0] + 1,",
           "out_hw = ((hp - span[0] + 1) // stride[0] + 1,", ("tests/test_conv.py",),
           "output height off by one for some strides"),
    Mutant("ref-model-no-residual-grad", "numpy_impl/nn.py", "return dx + dout if self.residual else dx",
           "return dx", ("tests/test_models.py",), "the V2 block's backward forgets the residual"),
    Mutant("ref-sgd-nesterov", "numpy_impl/optim.py", "grad = grad + mu * buf if g[\"nesterov\"] else buf",
           "grad = buf", ("tests/test_optim.py",), "SGD ignores nesterov"),
]  # fmt: skip


def _copy_tree(dest: Path) -> None:
    """The working tree's files that git knows or would add (tracked and untracked, not ignored)."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def _run_tests(copy: Path, tests, timeout: int, profile: str = "mutants", cache_dir=None) -> tuple[int, str]:
    env = dict(os.environ, HYPOTHESIS_PROFILE=profile, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *tests]
    try:
        p = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    return p.returncode, p.stdout + p.stderr


def _first_failure(output: str) -> str:
    m = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.M)
    return m.group(1) if m else "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per test run (default 900)")
    ap.add_argument(
        "--random",
        action="store_true",
        help="fresh random examples instead of ci's fixed ones: is a catch robust or lucky?",
    )
    args = ap.parse_args(argv)
    mutants = MUTANTS
    if args.only:
        unknown = set(args.only) - {m.name for m in MUTANTS}
        if unknown:
            ap.error(f"no mutant named {', '.join(sorted(unknown))}; see --list")
        mutants = [m for m in MUTANTS if m.name in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.name:34s} {m.path:32s} {m.why}")
        return 0

    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        copy = Path(tmp)
        _copy_tree(copy)
        check = subprocess.run(
            [sys.executable, "-c", "import kernels, numpy_impl; print(kernels.__file__)"],
            cwd=copy,
            env=dict(os.environ, PYTHONPATH=str(copy)),
            capture_output=True,
            text=True,
        )
        if not check.stdout.startswith(str(copy)):
            print(
                f"mutants: the copy's modules do not import first ({check.stdout or check.stderr})",
                file=sys.stderr,
            )
            return 2
        files = sorted({t for m in mutants for t in m.tests})
        print(f"baseline: {' '.join(files)} (compiles the kernels into the copy) ...", flush=True)
        rc, out = _run_tests(copy, files, args.timeout)
        if rc != 0:
            print(out[-3000:])
            print("mutants: the unmutated tests fail; fix them first", file=sys.stderr)
            return 2
        results = []
        for i, m in enumerate(mutants, 1):
            target = copy / m.path
            original = target.read_text()
            count = original.count(m.before)
            if count != 1:
                results.append((m, "NO LONGER APPLIES", f"snippet found {count} times", 0.0))
                print(f"[{i}/{len(mutants)}] {m.name}: snippet found {count} times", flush=True)
                continue
            target.write_text(original.replace(m.before, m.after))
            t0 = time.monotonic()
            # A kernel mutant compiles into a cache of its own: Numba checks a cached function
            # against its own file only, so code inlined from the mutated file (an intrinsic,
            # a helper) would otherwise come stale from the baseline's cache, or the mutant's
            # would stay in it for the next runs.
            own_cache = (
                tempfile.TemporaryDirectory(prefix="numba-") if m.path.startswith("kernels/") else None
            )
            try:
                rc, out = _run_tests(
                    copy,
                    m.tests,
                    args.timeout,
                    "mutants-random" if args.random else "mutants",
                    own_cache.name if own_cache else None,
                )
            finally:
                target.write_text(original)
                if own_cache:
                    own_cache.cleanup()
            dt = time.monotonic() - t0
            if rc == 0:
                verdict, by = "SURVIVED", "-"
            elif rc == 1:
                verdict, by = "caught", _first_failure(out)
            else:
                verdict, by = (
                    "caught",
                    f"pytest exit {rc} ({'timeout' if rc == -1 else 'crash or collection error'})",
                )
            results.append((m, verdict, by, dt))
            print(f"[{i}/{len(mutants)}] {m.name}: {verdict} by {by} ({dt:.0f} s)", flush=True)

    print("\n| mutant | file | bug | result | caught by |\n|---|---|---|---|---|")
    for m, verdict, by, _ in results:
        print(f"| {m.name} | {m.path} | {m.why} | {verdict} | {by} |")
    bad = [r for r in results if r[1] != "caught"]
    print(f"\n{len(results) - len(bad)} of {len(results)} mutants caught by their own module's tests")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

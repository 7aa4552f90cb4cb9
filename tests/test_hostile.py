"""Hostile input, as an attacker or an unlucky user would give it: crafted and odd images, extreme
values, empty batches and tiny datasets. Each case either gives the right answer or a clear error;
none may crash, print a traceback, or quietly give a wrong answer."""

import struct
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from PIL import Image

import kernels as K
import numpy_impl
from mobilenet import data as D
from numpy_impl import functional as F


def write_png(path, pixels: np.ndarray, bit_depth: int, color_type: int, size=None):
    """A PNG written by hand, so that it can be anything a file may claim: 16 bits per sample
    (which Pillow cannot write in colour) or a header whose size is not its data's."""

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    h, w = size or pixels.shape[:2]
    sample = ">u2" if bit_depth == 16 else "u1"
    rows = b"".join(b"\0" + pixels[i].astype(sample).tobytes() for i in range(pixels.shape[0]))
    header = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# --- images -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "channels, color_type",
    [(None, 0), (3, 2), (2, 4), (4, 6)],  # grey, RGB (48-bit), grey+alpha, RGBA (64-bit)
)
def test_16_bit_pngs_are_scaled_by_their_range(tmp_path, channels, color_type):
    value = np.random.default_rng(channels or 1).integers(0, 65536)
    shape = (6, 6) if channels is None else (6, 6, channels)
    write_png(tmp_path / "a.png", np.full(shape, value, np.uint16), 16, color_type)
    x = D._read_image(tmp_path / "a.png", 8)
    assert x.shape == (3, 8, 8)
    # 8-bit reductions (Pillow's, for colour) keep the high byte: within 1/255 of value / 65535
    np.testing.assert_allclose(x, value / 65535, atol=1 / 255)


def test_images_without_a_known_range_are_refused_by_name(tmp_path):
    Image.fromarray(np.full((4, 4), 7, np.int32)).save(tmp_path / "i.tif")
    with pytest.raises(ValueError, match="32-bit integer pixels have no known range"):
        D._read_image(tmp_path / "i.tif", 8)


def test_a_decompression_bomb_is_refused_and_skippable(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((5, 5), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    # headers claiming 900 M pixels (beyond Pillow's own limit) and 81 M (beyond ours), with no data
    write_png(tmp_path / "a" / "huge.png", np.zeros((1, 1), np.uint8), 8, 0, size=(30000, 30000))
    write_png(tmp_path / "b" / "big.png", np.zeros((1, 1), np.uint8), 8, 0, size=(9000, 9000))
    with pytest.raises(ValueError, match=r"cannot read image .*huge\.png"):
        D.load_image_folder(tmp_path)
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        ds = D.load_image_folder(tmp_path, on_error="skip")
    assert len(ds) == 6 and sorted(p.rsplit("/", 1)[1] for p in ds.skipped) == ["big.png", "huge.png"]


# --- values -------------------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("target", [0, 1, 2])
def test_cross_entropy_with_minus_inf_logits_is_torchs(smoothing, target):
    logits = np.array([[0.5, -np.inf, 1.0], [-np.inf, 2.0, -1.0]])
    t = np.array([target, 1])
    loss, cache = F.softmax_cross_entropy(logits, t, smoothing)
    lt = torch.tensor(logits, requires_grad=True)
    want = TF.cross_entropy(lt, torch.tensor(t), label_smoothing=smoothing)
    want.backward()
    assert loss == pytest.approx(want.item(), rel=1e-12)  # inf where torch's is (the -inf class's own target)
    np.testing.assert_allclose(F.softmax_cross_entropy_backward(1.0, cache), lt.grad.numpy(), rtol=1e-12)


# --- empty batches ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("arch", ["v1", "v2"])
def test_an_empty_batch_in_eval_mode_gives_empty_outputs(backend, arch):
    m = numpy_impl.mobilenet(arch, width_mult=0.25, num_classes=5, backend=backend).eval()
    for memory in ("nchw", "channels_last"):
        x = np.zeros((0, 3, 32, 32), np.float32)
        x = x if memory == "nchw" else np.zeros((0, 32, 32, 3), np.float32).transpose(0, 3, 1, 2)
        assert m(x).shape == (0, 5)
        assert m.backward(np.zeros((0, 5), np.float32)).shape == (0, 3, 32, 32)


def test_kernels_batch_norm_takes_an_empty_nchw_batch_in_eval():
    p = np.linspace(0.5, 1.5, 4).astype(np.float32)
    y, cache = K.batch_norm(np.zeros((0, 4, 3, 3), np.float32), p, p, p.copy(), p.copy(), False)
    dx, dw, db = K.batch_norm_backward(np.zeros((0, 4, 3, 3), np.float32), cache)
    assert y.shape == dx.shape == (0, 4, 3, 3) and np.all(dw == 0) and np.all(db == 0)

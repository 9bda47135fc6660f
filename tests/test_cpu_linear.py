"""Prepacked oneDNN Linear layers: within one rounding of the plain layer (bf16 and fp32), and the plain forward
wherever packing must not apply (training, changed weights, tracing)."""

import pytest
import torch
from torch import nn

from ovdet.towers import cpu_linear
from ovdet.towers.cpu_linear import PACKED, PackedLinear, pack, packable_dtypes, packing_available, unpack

pytestmark = [pytest.mark.skipif(not packing_available(), reason="torch built without oneDNN"),
              pytest.mark.usefixtures("seeded")]
# oneDNN has no bf16 linear on an AVX2-only CPU (`make test-isa` runs these tests as one): bf16 layers stay plain.
BF16_PACKED = packing_available() and torch.bfloat16 in packable_dtypes()
BF16 = pytest.param(torch.bfloat16, marks=pytest.mark.skipif(not BF16_PACKED, reason="no oneDNN bf16 linear here"))


def _layer(dtype=torch.float32, bias=True):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(48, 96, bias=bias), nn.GELU(), nn.Linear(96, 16, bias=bias)).eval().to(dtype)


@pytest.mark.parametrize("dtype", [BF16, torch.float32])
@pytest.mark.parametrize("rows", [(1, 7, 48), (3, 48), (2, 577, 48)])
def test_packed_equals_plain_within_one_rounding(rows, dtype):
    # Not bit-identity: on an AMX Xeon oneDNN blocks a 1154-row bf16 GEMM differently from the plain call and a few
    # outputs differ by one bf16 step (7.6e-6 near 0.001); on AVX512 CPUs without AMX they were identical.
    x = torch.randn(*rows)
    net = _layer(dtype)
    reference = _layer(torch.float32)
    reference.load_state_dict({k: v.float() for k, v in net.state_dict().items()})
    with torch.no_grad():
        plain = net(x.to(dtype))
        assert pack(net) == 2 and all(type(m) is PackedLinear for m in (net[0], net[2]))
        fast = net(x.to(dtype))
        exact = reference(x.to(dtype).float())  # the same weights and inputs in fp32
    assert fast.dtype == dtype and fast.shape == plain.shape
    if dtype == torch.bfloat16:  # one bf16 step (at most 2^-7 relative) apart, and both as near fp32 as bf16 allows
        torch.testing.assert_close(fast.float(), plain.float(), rtol=2**-7, atol=1e-5)
        for out in (fast, plain):
            torch.testing.assert_close(out.float(), exact, rtol=2**-6, atol=1e-2)
    else:
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [BF16, torch.float32])
def test_packed_path_is_really_taken_and_unpack_restores_plain_linear(dtype, monkeypatch):
    net = _layer(dtype)
    pack(net)
    calls = []
    real = torch.ops.mkldnn._linear_pointwise
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        net(torch.randn(2, 48).to(dtype))
    assert len(calls) == 2
    unpack(net)
    assert type(net[0]) is nn.Linear and PACKED not in net[0].__dict__
    with torch.no_grad():
        net(torch.randn(2, 48).to(dtype))
    assert len(calls) == 2  # plain again
    assert set(net.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_packed_layers_deep_copy_and_pickle():
    import copy
    import pickle

    net = _layer()
    pack(net)
    x = torch.randn(3, 48)
    twin, thawed = copy.deepcopy(net), pickle.loads(pickle.dumps(net))
    with torch.no_grad():
        for other in (twin, thawed):
            assert PACKED not in other[0].__dict__
            torch.testing.assert_close(other(x), net(x), rtol=1e-5, atol=1e-5)


def test_changed_weights_are_repacked():
    net = _layer()
    pack(net)
    x = torch.randn(4, 48)
    with torch.no_grad():
        before = net(x)
        net.load_state_dict({k: v * 2 for k, v in net.state_dict().items()})  # in-place copies bump the version
        after = net(x)
        unpack(net)
        expected = net(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)


def test_training_autograd_and_bf16_autocast_take_the_right_path():
    net = _layer()
    pack(net)
    x = torch.randn(5, 48, requires_grad=True)
    net(x).sum().backward()  # grad enabled, trainable weights: the plain forward, so gradients flow
    assert net[0].weight.grad is not None and x.grad is not None
    bf16 = _layer(torch.bfloat16)
    pack(bf16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = bf16(torch.randn(5, 48))  # fp32 input under bf16 autocast: cast, as F.linear would be
    assert out.dtype == torch.bfloat16
    with torch.no_grad():
        with pytest.raises(RuntimeError):
            bf16(torch.randn(5, 48))  # no autocast: the plain forward's own dtype error, not a silent cast


def test_detector_set_precision_packs_the_tower_and_head(tiny_clip_dir, monkeypatch):
    from ovdet.models.detector import Detector

    monkeypatch.setenv("OVDET_LINEAR_KERNEL", "packed")  # where this CPU measured packing faster

    det = Detector.from_clip(str(tiny_clip_dir), image_size=64).eval()
    x = torch.randn(1, 3, 64, 64)
    plain = det.predict(x, ["cat", "dog"])
    det.set_precision("fp32")
    kinds = {type(m) for m in [*det.backbone.vision.modules(), *det.head.modules()] if isinstance(m, nn.Linear)}
    assert kinds == {PackedLinear}
    fast = det.predict(x, ["cat", "dog"])
    for key in ("pred_boxes", "logits", "objectness"):
        torch.testing.assert_close(fast[key], plain[key], rtol=1e-4, atol=1e-4)
    keys = set(det.state_dict())
    det.set_precision("bf16")
    fc1 = det.backbone.vision.encoder.layers[0].mlp.fc1
    if BF16_PACKED:
        assert fc1.__dict__[PACKED][0].dtype == torch.bfloat16
    else:  # AVX2: oneDNN has no bf16 linear, so the bf16 layer runs plain (and does run)
        assert type(fc1) is nn.Linear and fc1.weight.dtype == torch.bfloat16
        assert det.predict(x, ["cat"])["logits"].isfinite().all()
    det.set_precision("fp32")
    assert set(det.state_dict()) == keys
    assert det.backbone.vision.encoder.layers[0].mlp.fc1.__dict__[PACKED][0].dtype == torch.float32


def test_bf16_layers_stay_plain_where_onednn_has_no_bf16_linear(monkeypatch):
    """On an AVX2-only CPU oneDNN refuses to pack a bf16 weight ("bf16 path needs the cpu support
    avx_ne_convert or avx512bw, avx512vl and avx512dq"): set_precision("bf16") raised there."""
    real = torch.ops.mkldnn._reorder_linear_weight

    def reorder(weight, *args):
        if weight.dtype == torch.bfloat16:
            raise RuntimeError("mkldnn_reorder_linear_weight: bf16 path needs the cpu support avx512bw")
        return real(weight, *args)

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", reorder)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    x = torch.randn(3, 48)
    net = _layer(torch.bfloat16)
    with torch.no_grad():
        plain = net(x.bfloat16())
        assert pack(net) == 0 and type(net[0]) is nn.Linear
        assert torch.equal(net(x.bfloat16()), plain)
        packed = _layer()
        assert pack(packed) == 2
        packed.bfloat16()  # cast after packing (as Bf16Weights does): the forward falls back instead of repacking
        assert torch.equal(packed(x.bfloat16()), plain)
    assert cpu_linear.packable_dtypes() == (torch.float32,)


def test_the_kernel_choice_is_measured_once_and_cached(tmp_path, monkeypatch):
    from ovdet.towers import kernel_choice

    monkeypatch.setenv("OVDET_CACHE", str(tmp_path))
    monkeypatch.delenv("OVDET_LINEAR_KERNEL", raising=False)
    net = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
    measured = []
    real = kernel_choice._measure
    monkeypatch.setattr(kernel_choice, "_measure", lambda *a: measured.append(a) or real(*a))
    first = kernel_choice.packed_is_faster(net, tokens=50)
    # every Linear shape with its count, at the detector's token count, measured in one go
    assert len(measured) == 1 and measured[0][:2] == (50, [[32, 64, 1], [64, 32, 1]])
    assert kernel_choice.packed_is_faster(net, tokens=50) == first and len(measured) == 1  # read back
    assert (tmp_path / kernel_choice.CHOICE_FILE).is_file()
    monkeypatch.setenv("OVDET_LINEAR_KERNEL", "plain")
    assert kernel_choice.packed_is_faster(net, tokens=50) is False


def test_the_kernel_measurement_weighs_each_shape_by_its_count(monkeypatch):
    """A kernel that is slower on the most frequent layers loses even where it wins on the largest one."""
    from ovdet.towers import kernel_choice

    def fake_linear(rate):  # a layer whose forward "takes" rate[(d_in, d_out)] seconds
        def forward(self, x):
            clock[0] += rate[(self.in_features, self.out_features)]
            return x.new_zeros(x.shape[0], self.out_features)
        return forward

    clock = [0.0]
    monkeypatch.setattr(kernel_choice.time, "perf_counter", lambda: clock[0])
    packed_rate = {(32, 256): 1.0, (32, 32): 3.0}  # packed: faster on the big layer, slower on the small ones
    plain_rate = {(32, 256): 2.0, (32, 32): 1.0}
    monkeypatch.setattr(PackedLinear, "forward", fake_linear(packed_rate))
    monkeypatch.setattr(nn.Linear, "forward", fake_linear(plain_rate))
    seconds = kernel_choice._measure(8, [[32, 256, 1], [32, 32, 4]], torch.float32)
    assert seconds == {"plain": 2.0 + 4 * 1.0, "packed": 1.0 + 4 * 3.0}


def test_set_precision_follows_the_measured_choice(tiny_clip_dir, monkeypatch):
    from ovdet.models.detector import Detector

    det = Detector.from_clip(str(tiny_clip_dir), image_size=64).eval()
    for forced, kind in (("plain", nn.Linear), ("packed", PackedLinear)):
        monkeypatch.setenv("OVDET_LINEAR_KERNEL", forced)
        det.set_precision("fp32")
        assert {type(m) for m in det.backbone.vision.modules() if isinstance(m, nn.Linear)} == {kind}

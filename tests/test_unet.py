"""The periodic conditional U-Net: symmetries of the box, resolution transfer, conditioning, config."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from cosmodiff.unet import (
    PeriodicDownsample,
    PeriodicUpsample,
    UNet,
    count_parameters,
    scale_params,
)

# small but complete: 3 levels (total downsampling 4), 2 blocks per level, both attentions
SMALL = {
    "base_channels": 16,
    "channel_mults": (1, 2, 2),
    "num_res_blocks": 2,
    "attention": (True, True, True),
    "mid_attention": True,
    "groups": 4,
    "time_dim": 32,
    "attention_heads": 2,
    "attention_head_dim": 8,
}
FACTOR = 4  # 2 ** (len(channel_mults) - 1)


def make(dtype=torch.float64, seed=0, **kw):
    """A small network with the zero-initialised output head perturbed, so outputs are not 0."""
    torch.manual_seed(seed)
    model = UNet(**{**SMALL, **kw}).to(dtype)
    with torch.no_grad():
        model.out_conv.weight.normal_(0.0, 0.2)
        model.out_conv.bias.normal_(0.0, 0.2)
    return model.eval()


def inputs(b=2, n=32, m=None, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 1, n, m or n, generator=g, dtype=dtype)
    t = torch.randint(0, 1000, (b,), generator=g)
    params = torch.stack([0.1 + 0.4 * torch.rand(b, generator=g, dtype=dtype), 0.6 + 0.4 * torch.rand(b, generator=g, dtype=dtype)], 1)
    return x, t, params


def shift_error(model, x, t, p, s):
    with torch.no_grad():
        y = model(x, t, p)
        ys = model(torch.roll(x, s, dims=(2, 3)), t, p)
    return (ys - torch.roll(y, s, dims=(2, 3))).abs().max().item()


# ---------------------------------------------------------------------------------------------
# 1. periodicity
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["ours", "authors"])
def test_shift_equivariance_for_multiples_of_the_downsampling_factor(head):
    model = make(head=head)
    x, t, p = inputs(n=32, m=48)  # non-square on purpose
    for s in [(FACTOR, 2 * FACTOR), (-FACTOR, 3 * FACTOR), (7 * FACTOR, -FACTOR), (0, 32)]:
        assert shift_error(model, x, t, p, s) < 1e-10, s
    # a stride-2 network is only equivariant under its own lattice of shifts: odd shifts (and
    # even shifts that are not multiples of the factor) are not symmetries and must not pass
    for s in [(1, 0), (0, 3), (2, 2)]:
        assert shift_error(model, x, t, p, s) > 1e-3, s


def test_zero_padding_breaks_the_symmetry():
    """The equivariance test has power: the same weights with zero padding fail it."""
    model = make()
    x, t, p = inputs(n=32)
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d) and mod.padding_mode == "circular":
            mod.padding_mode = "zeros"
    assert shift_error(model, x, t, p, (FACTOR, FACTOR)) > 1e-3


def test_resampling_layers_equal_their_action_on_the_periodic_tiling():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 12, dtype=torch.float64)
    tiled = x.repeat(1, 1, 3, 3)  # the periodic map on a 3x larger window; the centre copy is x
    up = PeriodicUpsample(3, 5).double()
    ref = up.conv(tiled)[..., 16:32, 24:48]  # transposed conv (padding 1) of the tiling, centre
    assert torch.allclose(up(x), ref, rtol=0, atol=1e-12)
    # the authors' layer (no periodic padding) agrees in the interior but not on the border
    plain = up.conv(x)
    assert torch.allclose(plain[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], rtol=0, atol=1e-12)
    assert (plain - ref).abs().amax() > 1e-3

    down = PeriodicDownsample(3, 5).double()
    ref = F.conv2d(tiled, down.conv.weight, down.conv.bias, stride=2, padding=1)[..., 4:8, 6:12]
    assert torch.allclose(down(x), ref, rtol=0, atol=1e-12)


def test_a_tiled_map_gives_the_tiled_output():
    """A 3x3 tiling of a periodic map is the same field: the output must be the tiling too."""
    model = make()
    x, t, p = inputs(n=16)
    with torch.no_grad():
        y = model(x, t, p)
        y3 = model(x.repeat(1, 1, 3, 3), t, p)
    assert torch.allclose(y3, y.repeat(1, 1, 3, 3), rtol=0, atol=1e-10)


def test_map_size_must_be_a_multiple_of_the_factor():
    model = make()
    x, t, p = inputs(n=30)
    with pytest.raises(ValueError, match="multiple"):
        model(x, t, p)


# ---------------------------------------------------------------------------------------------
# 2. resolution transfer
# ---------------------------------------------------------------------------------------------


def test_weights_from_64_run_at_256():
    torch.manual_seed(0)
    model = UNet(**SMALL)
    x, t, p = inputs(b=4, n=64, dtype=torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = (model(x, t, p) - x).square().mean()  # one "training" step at 64x64
    loss.backward()
    opt.step()

    clone = UNet.from_config(json.loads(json.dumps(model.config())))
    clone.load_state_dict(model.state_dict(), strict=True)
    model.eval(), clone.eval()
    x256, t256, p256 = inputs(b=1, n=256, dtype=torch.float32, seed=5)
    with torch.no_grad():
        y = clone(x256, t256, p256)
        assert y.shape == (1, 1, 256, 256)
        assert torch.isfinite(y).all() and y.abs().amax() > 0
        assert torch.equal(y, model(x256, t256, p256))
        assert torch.equal(clone(x, t, p), model(x, t, p))


# ---------------------------------------------------------------------------------------------
# 3. conditioning
# ---------------------------------------------------------------------------------------------


def test_fresh_network_predicts_zero():
    model = UNet(**SMALL)
    x, t, p = inputs(dtype=torch.float32)
    assert torch.equal(model(x, t, p), torch.zeros_like(x))


@pytest.mark.parametrize("conditioning", ["bias", "scale_shift"])
def test_output_depends_on_each_parameter_and_on_t(conditioning):
    model = make(conditioning=conditioning)
    x, t, p = inputs(n=16)
    with torch.no_grad():
        y = model(x, t, p)
        for j in range(2):
            q = p.clone()
            q[:, j] += 0.05
            assert (model(x, t, q) - y).abs().amax() > 1e-4, j
        assert (model(x, t + 1, p) - y).abs().amax() > 1e-6
        # integer and float timesteps are the same input; a scalar t is broadcast
        assert torch.equal(model(x, t.double(), p), y)
        assert torch.equal(model(x[:1], 7, p[:1]), model(x[:1], torch.tensor([7]), p[:1]))


@pytest.mark.parametrize("conditioning", ["bias", "scale_shift"])
def test_batch_members_are_independent(conditioning):
    model = make(conditioning=conditioning)
    x, t, p = inputs(b=3, n=16)
    with torch.no_grad():
        y = model(x, t, p)
        y1 = model(x[1:2], t[1:2], p[1:2])
    assert torch.allclose(y[1:2], y1, rtol=0, atol=1e-12)


def test_scale_shift_conditioning_is_a_gain_on_every_feature():
    """FiLM: a block whose embedding gives scale c (and shift 0) equals the same block with
    its first GroupNorm's affine weight and bias multiplied by 1 + c, i.e. the parameters set
    the gain of every feature; a bias block cannot do that with its conditioning alone."""
    from cosmodiff.unet import ResBlock

    torch.manual_seed(3)
    film = ResBlock(8, 8, time_dim=4, n_params=2, groups=4, dropout=0.0, conditioning="scale_shift").double()
    c = torch.linspace(-0.5, 0.7, 8, dtype=torch.float64)
    with torch.no_grad():
        film.time_bias.weight.zero_()
        film.time_bias.bias.copy_(torch.cat([c, torch.zeros(8, dtype=torch.float64)]))
        film.param_bias.weight.zero_()
    plain = ResBlock(8, 8, time_dim=4, n_params=2, groups=4, dropout=0.0, conditioning="bias").double()
    state = {k: v for k, v in film.state_dict().items() if not k.startswith(("time_bias", "param_bias"))}
    plain.load_state_dict(state, strict=False)
    with torch.no_grad():
        plain.time_bias.weight.zero_()
        plain.time_bias.bias.zero_()
        plain.param_bias.weight.zero_()
        plain.norm1.weight.mul_(1 + c)
        plain.norm1.bias.mul_(1 + c)
    x = torch.randn(2, 8, 8, 8, dtype=torch.float64)
    e, pa = torch.randn(2, 4, dtype=torch.float64), torch.rand(2, 2, dtype=torch.float64)
    torch.testing.assert_close(film(x, e, pa), plain(x, e, pa), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="conditioning must be one of"):
        UNet(**SMALL, conditioning="film")


# ---------------------------------------------------------------------------------------------
# 4. parameter scaling
# ---------------------------------------------------------------------------------------------


def test_scale_params_maps_the_prior_box_to_the_unit_square():
    bounds = ((0.1, 0.5), (0.6, 1.0))
    s = scale_params(torch.tensor([[0.1, 0.6], [0.5, 1.0], [0.3, 0.8], [0.7, 0.4]]), bounds)
    expect = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5], [1.5, -0.5]])  # last row extrapolates
    assert torch.allclose(s, expect, atol=1e-6)
    assert torch.equal(UNet(**SMALL).scale_params(torch.tensor([[0.1, 0.6]])), torch.zeros(1, 2))


def test_parameters_enter_only_through_their_scaled_values():
    """Same weights, other prior bounds: physical values with equal scaled values agree."""
    a = make()
    b = make(param_bounds=((0.0, 1.0), (0.5, 1.5)))
    b.load_state_dict(a.state_dict())
    x, t, p = inputs(n=16)
    s = a.scale_params(p)
    p_b = torch.stack([s[:, 0], 0.5 + s[:, 1]], 1)
    with torch.no_grad():
        assert torch.allclose(a(x, t, p), b(x, t, p_b), rtol=0, atol=1e-12)
        # at the lower bounds the network sees scaled zeros
        lower = torch.tensor([[0.1, 0.6]], dtype=torch.float64).expand(2, 2)
        assert torch.allclose(a(x, t, lower), b(x, t, torch.tensor([[0.0, 0.5]]).expand(2, 2)), rtol=0, atol=1e-12)


def test_out_of_prior_values_are_allowed_but_nan_is_not():
    model = make()
    x, t, p = inputs(n=16)
    with torch.no_grad():
        assert torch.isfinite(model(x, t, torch.tensor([[0.05, 1.2], [0.9, 0.3]]))).all()
        bad = p.clone()
        bad[1, 0] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            model(x, t, bad)
        with pytest.raises(ValueError, match="NaN"):
            scale_params(bad, model.param_bounds)
        with pytest.raises(ValueError, match="shape"):
            model(x, t, p[:, :1])


# ---------------------------------------------------------------------------------------------
# 5. configuration
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("conditioning", ["bias", "scale_shift"])
def test_config_round_trip_and_unknown_keys(conditioning):
    model = UNet(**SMALL, conditioning=conditioning)
    cfg = model.config()
    text = json.dumps(cfg)  # JSON-serialisable
    clone = UNet.from_config(json.loads(text))  # lists in place of tuples
    assert clone.config() == cfg
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert count_parameters(clone) == count_parameters(model)
    with pytest.raises(ValueError, match="widht"):
        UNet.from_config({**cfg, "widht": 3})
    with pytest.raises(ValueError, match="groups"):
        UNet.from_config({**cfg, "groups": 5})
    with pytest.raises(ValueError, match="attention"):
        UNet.from_config({**cfg, "attention": [True]})
    with pytest.raises(ValueError, match="head"):
        UNet.from_config({**cfg, "head": "theirs"})


def test_the_authors_head_drops_the_full_resolution_up_level():
    ours, authors = UNet(**SMALL), UNet(**SMALL, head="authors")
    assert len(ours.up) == 3 and len(authors.up) == 2  # their up path stops after its last upsampling
    assert authors.out_conv.kernel_size == (1, 1) and hasattr(authors, "out_block") and not hasattr(authors, "out_norm")
    # checkpoints written before the option rebuild the network they were trained with
    legacy = {k: v for k, v in ours.config().items() if k != "head"}
    assert UNet.from_config(legacy).config() == ours.config()


# ---------------------------------------------------------------------------------------------
# 6. gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head,conditioning", [("ours", "bias"), ("authors", "bias"), ("ours", "scale_shift")])
def test_every_parameter_takes_part_and_gets_a_gradient(head, conditioning):
    torch.manual_seed(0)
    model = UNet(**SMALL, dropout=0.1, head=head, conditioning=conditioning).train()
    x, t, p = inputs(n=16, dtype=torch.float32)
    model(x, t, p).square().mean().backward()
    # all parameters are in the graph even at zero init (DistributedDataParallel needs that)
    assert [n for n, q in model.named_parameters() if q.grad is None] == []
    model.zero_grad()
    with torch.no_grad():
        model.out_conv.weight.normal_(0.0, 0.2)
    (model(x, t, p) - x).square().mean().backward()
    assert [n for n, q in model.named_parameters() if q.grad is None or q.grad.abs().sum() == 0] == []


# ---------------------------------------------------------------------------------------------
# 7. mixed precision and memory format
# ---------------------------------------------------------------------------------------------


def test_autocast_bfloat16_and_channels_last():
    model = make(dtype=torch.float32)
    x, t, p = inputs(b=2, n=32, dtype=torch.float32)
    with torch.no_grad():
        ref = model(x, t, p)
    model_cl = make(dtype=torch.float32).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.allclose(model_cl(x_cl, t, p), ref, rtol=0, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model_cl(x_cl, t, p)
    assert out.shape == x.shape and torch.isfinite(out).all()
    rel = ((out.float() - ref).norm() / ref.norm()).item()
    assert rel < 0.1, rel
    out.float().square().mean().backward()
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in model_cl.parameters())

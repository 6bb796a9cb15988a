"""The denoising network: a periodic, parameter-conditioned U-Net (the network and nothing else).

It follows the network of Mudur, Cuesta-Lazaro & Finkbeiner (2023) (their
``UnetExplicitConditional`` with ``circular_conv: True``; see ``shared/docs/method.md`` section 2):

- ResNet blocks ``conv3x3 -> GroupNorm -> SiLU``, twice, with a 1x1 convolution on the skip path
  when the width changes; between the two convolutions each block adds a per-channel bias from
  the time embedding (SiLU -> Linear) and one from the scaled parameters (SiLU -> Linear).
- Linear attention (softmax over features for q, over positions for k) after each level, with a
  GroupNorm(1) before it and after its output projection, as a residual; full softmax attention
  in the bottleneck at resolution N / 2**(levels - 1).
- Downsampling by a 4x4, stride-2 convolution; upsampling by a 4x4, stride-2 transposed
  convolution.
- Time: sinusoidal embedding -> Linear -> GELU -> Linear (width ``time_dim``).  Parameters
  (Omega_m, sigma_8) min-max scaled to [0, 1] with the prior bounds; a small MLP of them
  (``n_params -> 5 n_params -> GELU -> time_dim``, the authors' "non-linear conditional
  embedding") is added to the time embedding.

Periodicity.  The maps are projections of a periodic box, so every layer is made periodic:

- every convolution pads circularly (``padding_mode="circular"``), so a map's left column sees its
  right column as a neighbour, exactly as in the box;
- the downsampling 4x4 / stride 2 / circular-padding-1 convolution maps the input pixels
  2j-1 .. 2j+2 (mod N) to output pixel j: shifting the input by 2 shifts the output by 1;
- the upsampling transposed convolution is applied to a circularly padded copy of its input (one
  pixel each side) and the result is cropped back to exactly twice the size.  The authors'
  ``nn.ConvTranspose2d(dim, dim, 4, 2, 1)`` cannot pad circularly (PyTorch only implements zero
  padding for transposed convolutions), so the outermost output pixels miss the contributions
  of their wrap-around neighbours: the borders of every upsampled feature map are wrong and the
  network is not periodic.  With the padding the result is identical to applying the transposed
  convolution to an infinite periodic tiling of the input (tested).  We keep a transposed
  convolution (rather than nearest-neighbour x2 + 3x3 conv) because it is the authors' layer and
  costs 4 instead of 9 multiply-adds per output pixel and channel pair; its kernel (4) is a
  multiple of its stride (2), so every output pixel receives the same number of taps (no
  checkerboard pattern from uneven overlap);
- GroupNorm and both attentions are functions of the set of pixels, not of their positions.

Hence the whole network commutes with circular shifts by multiples of its total downsampling
factor ``2**(len(channel_mults) - 1)`` (odd shifts are not symmetries of a stride-2 network),
and a map tiled periodically k x k gives the k x k tiling of the output.  No layer depends on
the resolution, so weights trained at 64 x 64 run unchanged at 256 x 256.

Differences from the authors' code (deliberate):

- the upsampling path also has a full-resolution level that concatenates the full-resolution
  skip, which the authors' up path never uses (their ``reversed(in_out[1:])`` drops it; their
  last features pass through one more ResNet block instead).  Otherwise the channel flow is
  theirs: the up path at resolution N / 2**i concatenates the skip of level i and runs at the
  width of level i-1, and the transposed convolution keeps the width;
- the output head is GroupNorm -> SiLU -> circular 3x3 convolution, zero-initialised (the
  network starts by predicting 0, as in ADM/EDM), instead of a ResNet block + 1x1 convolution;
- optionally (``conditioning="scale_shift"``) the embeddings scale and shift the first GroupNorm's
  output of every block (FiLM, as improved-diffusion's ``use_scale_shift_norm``) instead of adding
  a bias: the exact denoiser of Gaussian maps is a filter whose gain per mode depends on
  (Omega_m, sigma_8), which a bias alone can only reach through the nonlinearities;
- the transposed convolution is made periodic (above); full attention uses
  ``F.scaled_dot_product_attention`` (same maths, fused kernels).

Parameters with the defaults (base 64, mults 1, 2, 4, 8, two blocks, attention everywhere):
31.43M; the authors' network with ``circular_conv`` has 31.27M.

Only tensors go in and out: the network knows nothing about diffusion schedules or files.
``t`` is whatever the diffusion code calls a timestep (integer 0..T-1 in the paper); it is only
embedded sinusoidally.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .cosmology import PRIOR

__all__ = ["CONDITIONINGS", "HEADS", "PeriodicDownsample", "PeriodicUpsample", "UNet", "count_parameters", "scale_params"]

DEFAULT_PARAM_BOUNDS = (PRIOR["omega_m"], PRIOR["sigma_8"])  # the CAMELS LH prior of Omega_m, sigma_8


def count_parameters(module: nn.Module) -> int:
    """Number of (distinct) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def scale_params(params, bounds) -> torch.Tensor:
    """Min-max scale physical parameters with prior ``bounds``: lower bound -> 0, upper -> 1.

    ``params`` has shape (..., n) with n = len(bounds); values outside the prior are allowed
    (they scale outside [0, 1]: extrapolation is the user's decision), NaN or inf are not.
    """
    params = torch.as_tensor(params)
    if not params.is_floating_point():
        params = params.to(torch.get_default_dtype())
    n = len(bounds)
    if params.ndim == 0 or params.shape[-1] != n:
        raise ValueError(f"params must have shape (..., {n}) for {n} parameter bounds, got {tuple(params.shape)}")
    finite = torch.isfinite(params)
    if not finite.all():
        rows = torch.nonzero(~finite.reshape(-1, n).all(-1)).flatten().tolist()
        raise ValueError(f"params contain NaN or inf (rows {rows[:10]}{' ...' if len(rows) > 10 else ''})")
    lo = torch.tensor([float(b[0]) for b in bounds], dtype=params.dtype, device=params.device)
    hi = torch.tensor([float(b[1]) for b in bounds], dtype=params.dtype, device=params.device)
    return (params - lo) / (hi - lo)


def _conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="circular")


class PeriodicDownsample(nn.Module):
    """Halve the resolution: 4x4 convolution, stride 2, circular padding 1 (the authors' layer)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, padding_mode="circular")

    def forward(self, x):
        return self.conv(x)


class PeriodicUpsample(nn.Module):
    """Double the resolution: 4x4 / stride-2 transposed convolution of a periodic input.

    The input is padded circularly by one pixel each side, transposed-convolved with padding 1
    (size 2N + 4) and cropped by two pixels each side (size 2N).  For output pixel j the
    contributing input pixels are ceil((j-2)/2) .. floor((j+1)/2), i.e. -1 .. N, all present in
    the padded input, so the result equals the transposed convolution of the infinite periodic
    map.  Without the padding (the authors' layer) the border pixels lack those terms.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)

    def forward(self, x):
        h, w = x.shape[-2:]
        y = self.conv(F.pad(x, (1, 1, 1, 1), mode="circular"))
        return y[..., 2 : 2 * h + 2, 2 : 2 * w + 2]


#: How the time and parameter embeddings enter each ResNet block: "bias" (the authors': a
#: per-channel bias after the first convolution) or "scale_shift" (FiLM, as improved-diffusion's
#: use_scale_shift_norm: the first GroupNorm's output is multiplied by 1 + scale and shifted, so
#: the parameters can change the gain of every feature, not only its offset).
CONDITIONINGS = ("bias", "scale_shift")

#: The end of the up path: "ours" (a full-resolution up level that uses the full-resolution
#: skip, then GroupNorm -> SiLU -> zero-initialised circular 3x3 convolution) or "authors"
#: (their ``UnetExplicitConditional``: the up path stops after its last upsampling, the
#: full-resolution skip is unused, one ResNet block and a 1x1 convolution follow, default
#: initialisation, and each ResNet block's parameter projection has its own bias).
HEADS = ("ours", "authors")


class ResBlock(nn.Module):
    """conv3x3-GN-SiLU, + time and parameter conditioning, (dropout) conv3x3-GN-SiLU, + skip."""

    def __init__(self, c_in: int, c_out: int, time_dim: int, n_params: int, groups: int, dropout: float,
                 conditioning: str = "bias", param_bias_bias: bool = False):
        super().__init__()
        self.conditioning = conditioning
        k = 2 if conditioning == "scale_shift" else 1  # (scale, shift) or a bias per channel
        self.conv1 = _conv3x3(c_in, c_out)
        self.norm1 = nn.GroupNorm(groups, c_out)
        self.time_bias = nn.Linear(time_dim, k * c_out)
        # time_bias already has a bias; the authors' blocks carry a second one (redundant: the sum
        # is one bias, but Adam steps each separately)
        self.param_bias = nn.Linear(n_params, k * c_out, bias=param_bias_bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = _conv3x3(c_out, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, temb_act, p_act):
        # temb_act = SiLU(time embedding), p_act = SiLU(scaled parameters), computed once per call
        cond = (self.time_bias(temb_act) + self.param_bias(p_act))[:, :, None, None]
        if self.conditioning == "scale_shift":
            scale, shift = cond.chunk(2, dim=1)
            h = F.silu(self.norm1(self.conv1(x)) * (1 + scale) + shift)
        else:
            h = F.silu(self.norm1(self.conv1(x))) + cond
        h = F.silu(self.norm2(self.conv2(self.dropout(h))))
        return h + self.skip(x)


class LinearAttention(nn.Module):
    """Residual linear attention (Shen et al. 2021, as in lucidrains' LinearAttention): cost O(N)."""

    def __init__(self, channels: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.scale = head_dim**-0.5
        hidden = heads * head_dim
        self.norm = nn.GroupNorm(1, channels)
        self.to_qkv = nn.Conv2d(channels, 3 * hidden, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, channels, 1)
        self.out_norm = nn.GroupNorm(1, channels)

    def forward(self, x):
        b, _, h, w = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(b, 3, self.heads, self.head_dim, h * w)
        q, k, v = qkv.unbind(1)  # (b, heads, d, n)
        q = q.softmax(dim=-2) * self.scale  # over features
        k = k.softmax(dim=-1)  # over positions
        context = torch.matmul(k, v.transpose(-1, -2))  # (b, heads, d, e)
        out = torch.matmul(context.transpose(-1, -2), q)  # (b, heads, e, n)
        out = out.reshape(b, self.heads * self.head_dim, h, w)
        return x + self.out_norm(self.to_out(out))


class SelfAttention(nn.Module):
    """Residual full (softmax) multi-head self-attention over all positions: cost O(N^2)."""

    def __init__(self, channels: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        hidden = heads * head_dim
        self.norm = nn.GroupNorm(1, channels)
        self.to_qkv = nn.Conv2d(channels, 3 * hidden, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        b, _, h, w = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(b, 3, self.heads, self.head_dim, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # (b, heads, n, d)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        out = out.transpose(-1, -2).reshape(b, self.heads * self.head_dim, h, w)
        return x + self.to_out(out)


class _Level(nn.Module):
    """ResNet blocks, optional linear attention, optional resampling: one level of one path."""

    def __init__(self, blocks, attn, resample):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attn = attn
        self.resample = resample


class SinusoidalEmbedding(nn.Module):
    """Transformer-style embedding of a scalar: [sin(t f_k), cos(t f_k)], f_k = 10000^(-k/(K-1))."""

    def __init__(self, n_freq: int, max_period: float = 10000.0):
        super().__init__()
        self.n_freq, self.max_period = n_freq, max_period

    def forward(self, t, dtype):
        k = torch.arange(self.n_freq, device=t.device, dtype=dtype)
        freqs = torch.exp(-math.log(self.max_period) * k / (self.n_freq - 1))
        args = t.to(dtype)[:, None] * freqs[None, :]
        return torch.cat([args.sin(), args.cos()], dim=-1)


def _checked_args(in_channels, base_channels, channel_mults, num_res_blocks, attention, groups, time_dim, n_params,
                  param_bounds, dropout, attention_heads, attention_head_dim, conditioning, head):
    """ValueError (what to change) for invalid UNet arguments; else (channel_mults as ints,
    one attention flag per level, the width of each level, param_bounds as float pairs)."""
    channel_mults = tuple(int(m) for m in channel_mults)
    if not channel_mults or min(channel_mults) < 1:
        raise ValueError(f"channel_mults must be a non-empty list of positive integers, got {channel_mults}")
    levels = len(channel_mults)
    if isinstance(attention, bool):
        attention = (attention,) * levels
    attention = tuple(bool(a) for a in attention)
    if len(attention) != levels:
        raise ValueError(f"attention needs one flag per level ({levels}), got {len(attention)}: {attention}")
    if int(in_channels) < 1 or int(base_channels) < 1 or int(num_res_blocks) < 1:
        raise ValueError("in_channels, base_channels and num_res_blocks must be positive integers")
    widths = [int(base_channels) * m for m in channel_mults]
    if int(groups) < 1 or any(w % int(groups) for w in widths):
        raise ValueError(f"groups={groups} must divide every level's width {widths}")
    if int(time_dim) < 4:
        raise ValueError(f"time_dim must be at least 4, got {time_dim}")
    if int(n_params) < 1:
        raise ValueError(f"n_params must be at least 1, got {n_params}")
    param_bounds = tuple((float(lo), float(hi)) for lo, hi in param_bounds)
    if len(param_bounds) != int(n_params):
        raise ValueError(f"param_bounds needs {n_params} (low, high) pairs, got {len(param_bounds)}")
    if not all(math.isfinite(lo) and math.isfinite(hi) and lo < hi for lo, hi in param_bounds):
        raise ValueError(f"param_bounds must be finite (low, high) pairs with low < high, got {param_bounds}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if int(attention_heads) < 1 or int(attention_head_dim) < 1:
        raise ValueError("attention_heads and attention_head_dim must be positive integers")
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    return channel_mults, attention, widths, param_bounds


class UNet(nn.Module):
    """Periodic U-Net eps(x, t, theta) for maps of a periodic box, conditioned on cosmology.

    ``forward(x, t, params)``: ``x`` (B, C, H, W) with H and W multiples of
    ``2**(len(channel_mults) - 1)``; ``t`` (B,) integer or float timesteps (or one scalar for
    the batch); ``params`` (B, n_params) physical values such as (Omega_m, sigma_8) (or one row
    for the batch).  Returns (B, C, H, W).  The output head is zero-initialised, so a fresh
    network returns zeros.

    Sizes: the defaults (the paper's network) have 31.43M parameters; base 32, mults (1, 2, 2),
    one block per level, attention at the coarsest level + bottleneck, time_dim 128: 0.83M.
    """

    def __init__(
        self,
        in_channels=1,  # Channels of the input and the output maps (1: log density).
        base_channels=64,  # Width of the first (full-resolution) level.
        channel_mults=(1, 2, 4, 8),  # Width of level i (at N / 2**i) = base_channels * channel_mults[i]; the up path at level i > 0 runs at level i-1's width.
        num_res_blocks=2,  # ResNet blocks per level, on the way down and on the way up.
        attention=(True, True, True, True),  # Per level: linear attention after its ResNet blocks (both paths); one bool = all levels.
        mid_attention=True,  # Full softmax attention between the two bottleneck ResNet blocks.
        groups=8,  # GroupNorm groups in the ResNet blocks and the output head; must divide every width.
        time_dim=256,  # Width of the time (+ parameter) embedding; the sinusoid has 2 * max(2, time_dim // 8) features.
        n_params=2,  # Number of conditioning parameters (Omega_m, sigma_8).
        param_bounds=DEFAULT_PARAM_BOUNDS,  # Prior (low, high) per parameter: min-max scaled to [0, 1].
        dropout=0.0,  # Dropout probability before the second convolution of every ResNet block.
        attention_heads=4,  # Heads of both attentions.
        attention_head_dim=32,  # Width of one head (hidden width = heads * head_dim).
        conditioning="bias",  # How embeddings enter the ResNet blocks: "bias" (authors) or "scale_shift" (FiLM); see CONDITIONINGS.
        head="ours",  # End of the up path and output head: "ours" or "authors" (their exact network); see HEADS.
    ):
        super().__init__()
        channel_mults, attention, widths, param_bounds = _checked_args(
            in_channels, base_channels, channel_mults, num_res_blocks, attention, groups, time_dim, n_params,
            param_bounds, dropout, attention_heads, attention_head_dim, conditioning, head)
        levels = len(channel_mults)
        self._config = {
            "in_channels": int(in_channels),
            "base_channels": int(base_channels),
            "channel_mults": list(channel_mults),
            "num_res_blocks": int(num_res_blocks),
            "attention": list(attention),
            "mid_attention": bool(mid_attention),
            "groups": int(groups),
            "time_dim": int(time_dim),
            "n_params": int(n_params),
            "param_bounds": [list(b) for b in param_bounds],
            "dropout": float(dropout),
            "attention_heads": int(attention_heads),
            "attention_head_dim": int(attention_head_dim),
            "conditioning": str(conditioning),
            "head": str(head),
        }
        self.in_channels = int(in_channels)
        self.n_params = int(n_params)
        self.param_bounds = param_bounds
        self.downsampling_factor = 2 ** (levels - 1)
        time_dim, groups, heads, head_dim = int(time_dim), int(groups), int(attention_heads), int(attention_head_dim)

        def block(c_in, c_out):
            return ResBlock(c_in, c_out, time_dim, self.n_params, groups, float(dropout), conditioning, head == "authors")

        def lin_attn(c, flag):
            return LinearAttention(c, heads, head_dim) if flag else None

        # the modules are created in this order (it fixes the seeded initial weights and the
        # state_dict): embeddings, down path, bottleneck, up path, output head
        self._build_embeddings(time_dim)
        c = self._build_down(widths, attention, int(num_res_blocks), block, lin_attn)
        self._build_mid(c, mid_attention, heads, head_dim, block)
        self.head = head
        c = self._build_up(c, widths, attention, int(num_res_blocks), block, lin_attn)
        self._build_head(c, groups, block)

    def _build_embeddings(self, time_dim):
        """Sinusoidal time embedding + MLP, and the MLP of the scaled parameters."""
        n_freq = max(2, time_dim // 8)
        self.time_embed = SinusoidalEmbedding(n_freq)
        self.time_mlp = nn.Sequential(nn.Linear(2 * n_freq, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim))
        self.param_mlp = nn.Sequential(
            nn.Linear(self.n_params, 5 * self.n_params), nn.GELU(), nn.Linear(5 * self.n_params, time_dim)
        )

    def _build_down(self, widths, attention, num_res_blocks, block, lin_attn):
        """Down path: level i keeps widths[i]; its output (after attention) is the skip of
        level i. Returns the width at the bottom."""
        levels = len(widths)
        self.down = nn.ModuleList()
        c = self.in_channels
        for i, w in enumerate(widths):
            blocks = [block(c if j == 0 else w, w) for j in range(num_res_blocks)]
            down = PeriodicDownsample(w, w) if i < levels - 1 else None
            self.down.append(_Level(blocks, lin_attn(w, attention[i]), down))
            c = w
        return c

    def _build_mid(self, c, mid_attention, heads, head_dim, block):
        """Bottleneck at N / 2**(levels-1): ResNet block, full attention, ResNet block."""
        self.mid_block1 = block(c, c)
        self.mid_attn = SelfAttention(c, heads, head_dim) if mid_attention else None
        self.mid_block2 = block(c, c)

    def _build_up(self, c, widths, attention, num_res_blocks, block, lin_attn):
        """Up path, at resolution N / 2**i: concatenate the skip of level i, ResNet blocks to
        the width of the next finer level (the authors' channel flow), attention, upsample.
        Returns the width at the top."""
        levels = len(widths)
        self.up = nn.ModuleList()
        for i in reversed(range(0 if self.head == "ours" else 1, levels)):
            w = widths[max(i - 1, 0)]
            blocks = [block(c + widths[i] if j == 0 else w, w) for j in range(num_res_blocks)]
            up = PeriodicUpsample(w, w) if i > 0 else None
            self.up.append(_Level(blocks, lin_attn(w, attention[i]), up))
            c = w
        return c

    def _build_head(self, c, groups, block):
        """Output head: the authors' ResNet block + 1x1 convolution, or ours, GroupNorm -> SiLU
        -> circular 3x3 convolution, zero-initialised (the untrained network predicts 0)."""
        if self.head == "authors":  # one ResNet block, then a 1x1 convolution
            self.out_block = block(c, c)
            self.out_conv = nn.Conv2d(c, self.in_channels, 1)
            return
        self.out_norm = nn.GroupNorm(groups, c)
        self.out_conv = _conv3x3(c, self.in_channels)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Mapping) -> UNet:
        """Build from keyword arguments (lists allowed for tuples); unknown keys -> ValueError."""
        if not isinstance(cfg, Mapping):
            raise TypeError(f"UNet config must be a mapping of keyword arguments, got {type(cfg).__name__}")
        allowed = _init_arg_names()
        unknown = sorted(set(cfg) - set(allowed))
        if unknown:
            raise ValueError(f"unknown UNet config key(s): {', '.join(map(str, unknown))}; allowed: {', '.join(allowed)}")
        return cls(**dict(cfg))

    def config(self) -> dict:
        """JSON-serialisable keyword arguments that rebuild this network (same state_dict layout)."""
        return copy.deepcopy(self._config)

    def scale_params(self, params) -> torch.Tensor:
        """Physical parameters -> [0, 1] with this network's prior bounds (see :func:`scale_params`)."""
        return scale_params(params, self.param_bounds)

    # ------------------------------------------------------------------------------------------
    def forward(self, x, t, params):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        b, _, h, w = x.shape
        f = self.downsampling_factor
        if h % f or w % f:
            raise ValueError(f"map size {h}x{w} must be a multiple of the total downsampling factor {f}")
        wdtype = self.time_mlp[0].weight.dtype

        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0 or t.shape == (1,):
            t = t.reshape(1).expand(b)
        if t.shape != (b,):
            raise ValueError(f"t must have shape ({b},) (or be a scalar), got {tuple(t.shape)}")
        params = torch.as_tensor(params, device=x.device)
        if params.ndim == 1:
            params = params[None]
        if params.ndim != 2 or params.shape[1] != self.n_params or params.shape[0] not in (1, b):
            raise ValueError(f"params must have shape ({b}, {self.n_params}), got {tuple(params.shape)}")
        hi_dtype = torch.float64 if wdtype == torch.float64 else torch.float32  # never scale in bf16
        p = self.scale_params(params.to(hi_dtype)).to(wdtype).expand(b, -1)

        emb = self.time_mlp(self.time_embed(t, hi_dtype).to(wdtype)) + self.param_mlp(p)
        e, pa = F.silu(emb), F.silu(p)

        skips = []
        for lev in self.down:
            for blk in lev.blocks:
                x = blk(x, e, pa)
            if lev.attn is not None:
                x = lev.attn(x)
            skips.append(x)
            if lev.resample is not None:
                x = lev.resample(x)

        x = self.mid_block1(x, e, pa)
        if self.mid_attn is not None:
            x = self.mid_attn(x)
        x = self.mid_block2(x, e, pa)

        for lev in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            for blk in lev.blocks:
                x = blk(x, e, pa)
            if lev.attn is not None:
                x = lev.attn(x)
            if lev.resample is not None:
                x = lev.resample(x)

        if self.head == "authors":
            return self.out_conv(self.out_block(x, e, pa))
        return self.out_conv(F.silu(self.out_norm(x)))


def _init_arg_names():
    return [n for n in inspect.signature(UNet.__init__).parameters if n != "self"]

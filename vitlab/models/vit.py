"""The Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words").

Image -> patch tokens -> [class] token prepended -> position embeddings added -> pre-norm
Transformer encoder -> final LayerNorm -> head on the class token (or on the token mean).

The attention layer and the token-embedding layer are injected (``attn_layer``, ``embed_layer``),
so DeepViT (re-attention) and the hybrid (ResNet-feature tokens) are this class with other layers,
not copies of it. :func:`build_vit` turns a :class:`ViTConfig` into constructor arguments.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from vitlab.layers import Attention, DropPath, Mlp, PatchEmbed, TokenEmbed, to_2tuple
from vitlab.layers.attention_pool import AttentionPool
from vitlab.layers.layer_scale import LayerScale
from vitlab.layers.mlp import Activation
from vitlab.layers.pos_embed import ResampleMethod, resample_pos_embed, sincos_2d
from vitlab.layers.recorder import record_attention
from vitlab.models.vit_config import ViTConfig
from vitlab.models.vit_intermediates import OutputFmt, TimmResult, timm_intermediates


class Block(nn.Module):
    """Pre-norm Transformer block: x + MSA(LN(x)), then x + MLP(LN(x)) (ViT paper, Eq. 2-3).

    ``attn_layer`` is a factory ``(dim, num_heads, qkv_bias=, attn_drop=, proj_drop=) -> Attention``
    (the class itself, or e.g. a partial of ReAttention). ``scale_adjustment`` s != 1 gives the
    official DeepViT block, x + f(LN(s x)) / s on both branches. ``init_values`` adds LayerScale
    (x + gamma * f(LN(x)), CaiT Eq. 4) on both branches, as in DeiT-III and DINOv2.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        act: Activation = "gelu",
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        attn_layer: Callable[..., Attention] = Attention,
        scale_adjustment: float = 1.0,
        init_values: float | None = None,
    ) -> None:
        super().__init__()
        self.scale_adjustment = scale_adjustment
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = attn_layer(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.ls1: nn.Module = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_dim, act=act, drop=drop)
        self.ls2: nn.Module = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D)."""
        s = self.scale_adjustment
        if s != 1.0:
            x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x * s)))) / s
            return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x * s)))) / s
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class VisionTransformer(nn.Module):
    """ViT classifier with the common vitlab face (see DESIGN.md, rule 2).

    Args:
        img_size: input (H, W) or side; each divisible by ``patch_size``.
        patch_size: patch side P.
        in_chans: input channels.
        num_classes: classes of the head; 0 leaves the head out (features only).
        embed_dim, depth, num_heads, mlp_dim: width D, blocks L, heads H, MLP hidden width.
        qkv_bias, norm_eps, act: numerics of the blocks (paper: bias, 1e-6, exact GELU).
        class_token: prepend a learnable [class] token.
        dist_token: also prepend DeiT's distillation token (after the class token) with its own
            head ``head_dist``; the logits are the mean of the two heads' (timm's inference
            behaviour, here in train and eval alike so the return type never changes).
        reg_tokens: register tokens (Darcet et al. 2024) after the class / distillation tokens; like
            every prefix token they are never pooled. Tokens: [cls][dist][reg * n][patches].
        global_pool: ``"token"`` (class token), ``"avg"`` (mean of the patch tokens) or ``"map"``
            (a learned query attends over the patch tokens: SigLIP's attention-pooling head).
        fc_norm: apply the final LayerNorm after pooling instead of to every token.
        pos_embed: ``"learn"`` (1-D learned), ``"sincos"`` (fixed 2-D) or ``"none"``.
        no_embed_class: position embeddings cover the patches only (timm's ``no_embed_class``:
            DeiT-III, DINOv2 with registers). The table keeps its prefix rows, held at zero and
            never added, so every vitlab table has the layout (1, prefix + N, D).
        init_values: LayerScale's initial value on both branches of every block; None for none.
        pre_norm: LayerNorm ``norm_pre`` on the tokens entering block 0 (CLIP's image tower); the
            patch projection then has no bias, as in CLIP.
        drop_rate: dropout after the position embedding and in every block's MLP / projection.
        attn_drop_rate: dropout on attention probabilities.
        drop_path_rate: stochastic depth, rising linearly to this value over the blocks.
        head_drop_rate: dropout before the classifier.
        representation_size: width of the paper's pre-logits layer (Linear + tanh), or None.
        embed_layer: factory ``(img_size, patch_size, in_chans, embed_dim) -> TokenEmbed``.
        attn_layer: attention class, :class:`Attention` or a subclass (or a factory returning one);
            or a per-block sequence of them.
        scale_adjustment: DeepViT's block scale adjustment (1.0: the plain ViT block).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        act: Activation = "gelu",
        class_token: bool = True,
        dist_token: bool = False,
        global_pool: str = "token",
        fc_norm: bool = False,
        pos_embed: str = "learn",
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        head_drop_rate: float = 0.0,
        representation_size: int | None = None,
        embed_layer: Callable[..., TokenEmbed] = PatchEmbed,
        attn_layer: Callable[..., Attention] | Sequence[Callable[..., Attention]] = Attention,
        scale_adjustment: float = 1.0,
        reg_tokens: int = 0,
        no_embed_class: bool = False,
        init_values: float | None = None,
        pre_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_args(global_pool, class_token, dist_token, reg_tokens, pos_embed)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.embed_dim = self.num_features = embed_dim
        self.num_reg_tokens = reg_tokens
        self.num_prefix_tokens = (1 if class_token else 0) + (1 if dist_token else 0) + reg_tokens
        self.pos_embed_type = pos_embed
        self.no_embed_class = no_embed_class

        self.patch_embed = embed_layer(to_2tuple(img_size), patch_size, in_chans, embed_dim)
        if pre_norm:  # CLIP: the LayerNorm right after makes a bias redundant; timm and OpenAI drop it
            self.patch_embed.proj.bias = None
        self._init_tokens(embed_dim, class_token, dist_token, reg_tokens, pos_embed == "learn")
        self.pos_drop = nn.Dropout(drop_rate)
        self.norm_pre = nn.LayerNorm(embed_dim, eps=norm_eps) if pre_norm else nn.Identity()

        attn_layers = list(attn_layer) if isinstance(attn_layer, Sequence) else [attn_layer] * depth
        if len(attn_layers) != depth:
            raise ValueError(f"got {len(attn_layers)} attention layers for {depth} blocks")
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_dim, qkv_bias, norm_eps, act, drop_rate, attn_drop_rate, dpr[i],
                  attn_layers[i], scale_adjustment, init_values)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if not fc_norm else nn.Identity()
        self.fc_norm = nn.LayerNorm(embed_dim, eps=norm_eps) if fc_norm else nn.Identity()
        self.attn_pool = AttentionPool(embed_dim, num_heads, mlp_dim, norm_eps, act) if global_pool == "map" else None
        if representation_size:
            self.pre_logits: nn.Module = nn.Sequential(nn.Linear(embed_dim, representation_size), nn.Tanh())
            self.num_features = representation_size
        else:
            self.pre_logits = nn.Identity()
        self.head_drop = nn.Dropout(head_drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head_dist: nn.Module | None = None
        if dist_token:
            self.head_dist = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.config: ViTConfig | None = None  # set by build_vit; kept in sync by the methods below
        self.init_weights()

    # ----------------------------------------------------------------------------- set-up
    def _init_tokens(self, dim: int, class_token: bool, dist_token: bool, reg_tokens: int, learned: bool) -> None:
        """The prefix tokens (1, n, D) and the position table (1, prefix + N, D), learned or fixed."""
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if dist_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, dim)) if reg_tokens else None
        n_pos = self.num_prefix_tokens + self.patch_embed.num_patches
        if learned:
            self.pos_embed: nn.Parameter | None = nn.Parameter(torch.zeros(1, n_pos, dim))
        else:
            self.pos_embed = None
            self.register_buffer("pos_embed_fixed", self._fixed_pos_embed(), persistent=False)

    def _fixed_pos_embed(self) -> torch.Tensor:
        """(1, T, D) fixed table: zeros for prefix tokens, 2-D sin-cos (or zeros) on the grid."""
        grid = self.patch_embed.grid_size
        if self.pos_embed_type == "sincos":
            table = sincos_2d(grid, self.embed_dim)
        else:
            table = torch.zeros(grid[0] * grid[1], self.embed_dim)
        prefix = torch.zeros(self.num_prefix_tokens, self.embed_dim)
        return torch.cat([prefix, table], 0)[None]

    def init_weights(self) -> None:
        """Truncated-normal linears and position embedding, tiny class token, zero head (paper)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            if self.no_embed_class:
                nn.init.zeros_(self.pos_embed[:, : self.num_prefix_tokens])
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.reg_token is not None:
            nn.init.normal_(self.reg_token, std=1e-6)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)
        for head in (self.head, self.head_dist):
            if isinstance(head, nn.Linear):
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    def _update_config(self, **changes: Any) -> None:
        if self.config is not None:
            self.config = dataclasses.replace(self.config, **changes)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` (0: no head)."""
        if global_pool is not None:
            if (global_pool not in ("token", "avg", "map") or (global_pool == "token" and self.cls_token is None)
                    or (global_pool == "avg" and self.dist_token is not None)):
                raise ValueError(f"invalid global_pool {global_pool!r} for this model")
            if (global_pool == "map") != (self.attn_pool is not None):  # its weights belong to the body
                raise ValueError("reset_classifier cannot add or remove attention pooling (global_pool 'map'); "
                                 "build the model with the pooling it needs")
            self.global_pool = global_pool
        self.num_classes = num_classes
        ref = next(self.parameters())
        def new_head() -> nn.Module:
            if num_classes <= 0:
                return nn.Identity()
            head = nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
            return head

        self.head = new_head()
        if self.head_dist is not None:
            self.head_dist = new_head()
        self._update_config(num_classes=num_classes, global_pool=self.global_pool)

    def set_input_size(
        self, img_size: int | tuple[int, int], method: ResampleMethod = "bicubic", antialias: bool = True
    ) -> None:
        """Run at a new resolution; learned position embeddings are resampled in 2-D.

        Setting the current size again changes nothing.
        """
        img_size = to_2tuple(img_size)
        old_grid = self.patch_embed.grid_size
        self.patch_embed.set_input_size(img_size)  # validates divisibility first
        new_grid = self.patch_embed.grid_size
        if self.pos_embed is not None:
            with torch.no_grad():
                new = resample_pos_embed(self.pos_embed.data, new_grid, old_grid, self.num_prefix_tokens, method, antialias)
            self.pos_embed = nn.Parameter(new, requires_grad=self.pos_embed.requires_grad)
        else:
            ref = self.pos_embed_fixed
            self.pos_embed_fixed = self._fixed_pos_embed().to(device=ref.device, dtype=ref.dtype)
        self._update_config(img_size=img_size)

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.patch_embed.grid_size

    @property
    def attention_layers(self) -> list[Attention]:
        """Every attention layer, found by base class (so subclasses such as ReAttention too)."""
        return [m for m in self.modules() if isinstance(m, Attention)]

    # ----------------------------------------------------------------------------- forward
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> tokens (B, prefix + N, D) entering block 0: [cls][dist][reg][patches]
        with position embeddings added (and ``norm_pre`` applied when the model has one)."""
        x = self.patch_embed(x)
        pos = (self.pos_embed if self.pos_embed is not None else self.pos_embed_fixed).to(x.dtype)
        if self.no_embed_class:  # timm's order: the patches get their embeddings, then the prefix joins
            x = x + pos[:, self.num_prefix_tokens :]
        tokens = (self.cls_token, self.dist_token, self.reg_token)
        prefix = [t.expand(x.shape[0], -1, -1) for t in tokens if t is not None]
        if prefix:
            x = torch.cat([*prefix, x], dim=1)
        else:
            # The tokens are a transposed view of a (B, D, N) conv output; with no prefix to concatenate,
            # elementwise ops would keep that layout through the residual stream and every LayerNorm
            # and Linear would copy its input. One copy here: ~5% faster training steps (GAP models).
            x = x.contiguous()
        if not self.no_embed_class:
            x = x + pos
        return self.norm_pre(self.pos_drop(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> normalised tokens (B, prefix + N, D)."""
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """tokens (B, T, D) -> (B, D): the class token, the mean of the patch tokens, or their
        attention pooling (registers and other prefix tokens are never pooled)."""
        if self.attn_pool is not None:
            return self.attn_pool(x[:, self.num_prefix_tokens :])
        if self.global_pool == "avg":
            return x[:, self.num_prefix_tokens :].mean(dim=1)
        return x[:, 0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """tokens (B, T, D) -> logits (B, num_classes), or the pooled features (B, F) if pre_logits."""
        if self.head_dist is not None:  # DeiT: class and distillation tokens, one head each
            cls, dist = self.pre_logits(self.fc_norm(x[:, 0])), self.pre_logits(self.fc_norm(x[:, 1]))
            if pre_logits:
                return (cls + dist) / 2
            return (self.head(self.head_drop(cls)) + self.head_dist(self.head_drop(dist))) / 2
        x = self.pre_logits(self.fc_norm(self.pool(x)))
        if pre_logits:
            return x
        return self.head(self.head_drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        return_attn: bool = False,
        *,
        norm: bool | None = None,
        output_fmt: OutputFmt | None = None,
        intermediates_only: bool | None = None,
        return_prefix_tokens: bool | None = None,
        stop_early: bool | None = None,
        output_dict: bool | None = None,
    ) -> dict[str, Any] | TimmResult:
        """Run the model and return what happens inside it.

        Any of timm's keywords (``norm``, ``output_fmt``, ``intermediates_only``,
        ``return_prefix_tokens``, ``stop_early``, ``output_dict``) selects timm's contract: what
        timm's ``VisionTransformer.forward_intermediates`` returns, e.g. ``intermediates_only=True``
        gives a list of (B, D, gh, gw) maps (see :mod:`vitlab.models.vit_intermediates`; also
        :meth:`forward_intermediates_timm`). Without them, vitlab's dict below.

        Args:
            x: (B, C, H, W) images.
            indices: blocks to report: None for all, an int n for the last n, or a list of block
                indices (negative counts from the end).
            return_attn: also return attention probabilities of those blocks (explicit path;
                vitlab's dict only).

        Returns:
            dict with stable keys:
              ``indices``: list[int] of the reported blocks (non-negative);
              ``embed``: (B, T, D) tokens entering block 0;
              ``blocks``: list of (B, T, D) outputs of the reported blocks (before the final norm);
              ``attn``: list of (B, H, T, T) attention probabilities (empty unless return_attn);
              ``features``: (B, T, D) final normalised tokens; ``pre_logits``: (B, F);
              ``logits``: (B, num_classes); ``grid_size``: (gh, gw);
              ``num_prefix_tokens``: int. T = num_prefix_tokens + gh * gw.
        """
        timm_kw = dict(norm=norm, output_fmt=output_fmt, intermediates_only=intermediates_only,
                       return_prefix_tokens=return_prefix_tokens, stop_early=stop_early, output_dict=output_dict)
        if any(v is not None for v in timm_kw.values()):
            if return_attn:
                raise ValueError("return_attn belongs to vitlab's dict contract, not timm's (given with timm's keywords)")
            return self.forward_intermediates_timm(x, indices, **{k: v for k, v in timm_kw.items() if v is not None})
        wanted = _resolve_indices(indices, len(self.blocks))
        # The one recorder (vitlab.layers.recorder) on the reported blocks' attention; its hooks switch
        # them to the explicit path for this call only.
        recorder = record_attention(self, [self.blocks[i].attn for i in wanted], mixed=False) if return_attn else None
        with recorder if recorder is not None else contextlib.nullcontext():
            h = self.embed(x)
            embed_out, outs = h, []
            for i, blk in enumerate(self.blocks):
                h = blk(h)
                if i in wanted:
                    outs.append(h)
        feats = self.norm(h)
        pre = self.forward_head(feats, pre_logits=True)
        return {
            "indices": wanted,
            "embed": embed_out,
            "blocks": outs,
            "attn": recorder.maps("softmax") if recorder is not None else [],
            "features": feats,
            "pre_logits": pre,
            "logits": self.head(self.head_drop(pre)) if self.head_dist is None else self.forward_head(feats),
            "grid_size": self.patch_embed.grid_size,
            "num_prefix_tokens": self.num_prefix_tokens,
        }

    def forward_intermediates_timm(
        self, x: torch.Tensor, indices: int | Sequence[int] | None = None, norm: bool = False,
        output_fmt: OutputFmt = "NCHW", intermediates_only: bool = False, return_prefix_tokens: bool = False,
        stop_early: bool = False, output_dict: bool = False,
    ) -> TimmResult:
        """timm's ``forward_intermediates`` (see :func:`vitlab.models.vit_intermediates.timm_intermediates`)."""
        return timm_intermediates(self, x, _resolve_indices(indices, len(self.blocks)), norm, output_fmt,
                                  intermediates_only, return_prefix_tokens, stop_early, output_dict)

    def get_intermediate_layers(
        self, x: torch.Tensor, n: int | Sequence[int] = 1, reshape: bool = False,
        return_prefix_tokens: bool = False, norm: bool = False,
    ) -> list[Any]:
        """DINO's interface (as timm's): the last n (or listed) blocks' patch tokens, (B, N, D), or
        (B, D, gh, gw) with ``reshape``."""
        out = self.forward_intermediates_timm(x, n, norm=norm, output_fmt="NCHW" if reshape else "NLC",
                                              intermediates_only=True, return_prefix_tokens=return_prefix_tokens)
        return list(out)


def _check_args(global_pool: str, class_token: bool, dist_token: bool, reg_tokens: int, pos_embed: str) -> None:
    """ValueError for a combination the ViT cannot build."""
    if global_pool not in ("token", "avg", "map"):
        raise ValueError(f"global_pool must be 'token', 'avg' or 'map', got {global_pool!r}")
    if global_pool == "token" and not class_token:
        raise ValueError("global_pool='token' needs class_token=True")
    if dist_token and (not class_token or global_pool != "token"):
        raise ValueError("dist_token=True needs class_token=True and global_pool='token'")
    if dist_token and reg_tokens:
        raise ValueError("reg_tokens with dist_token=True is not supported (no published model has both)")
    if pos_embed not in ("learn", "sincos", "none"):
        raise ValueError(f"pos_embed must be 'learn', 'sincos' or 'none', got {pos_embed!r}")


def _resolve_indices(indices: int | Sequence[int] | None, depth: int) -> list[int]:
    if indices is None:
        return list(range(depth))
    if isinstance(indices, int):
        if not 0 < indices <= depth:
            raise ValueError(f"indices={indices}: expected 1..{depth} last blocks")
        return list(range(depth - indices, depth))
    out = []
    for i in indices:
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise ValueError(f"block index {i} out of range for depth {depth}")
        out.append(j)
    return sorted(set(out))


def build_vit(cfg: ViTConfig) -> VisionTransformer:
    """Construct a :class:`VisionTransformer` from a config; the only reader of ViTConfig.

    The stem and the attention layers come from the name -> layer tables (:mod:`vitlab.layers.tables`):
    ``cfg.stem`` / ``cfg.stem_args`` give the embed layer, ``cfg.attn`` / ``cfg.attn_args`` one
    attention factory per block.
    """
    cfg.validate()
    model = VisionTransformer(
        img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans, num_classes=cfg.num_classes,
        embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads, mlp_dim=cfg.mlp_dim,
        qkv_bias=cfg.qkv_bias, norm_eps=cfg.norm_eps, act=cfg.act, class_token=cfg.class_token,
        global_pool=cfg.global_pool, fc_norm=cfg.fc_norm, pos_embed=cfg.pos_embed, drop_rate=cfg.drop_rate,
        attn_drop_rate=cfg.attn_drop_rate, drop_path_rate=cfg.drop_path_rate, head_drop_rate=cfg.head_drop_rate,
        representation_size=cfg.representation_size, embed_layer=cfg.stem_layer_args().layer(),
        attn_layer=cfg.attn_layer_args().layers(cfg.depth), scale_adjustment=cfg.scale_adjustment,
        dist_token=cfg.dist_token, reg_tokens=cfg.reg_tokens, no_embed_class=cfg.no_embed_class,
        init_values=cfg.init_values, pre_norm=cfg.pre_norm,
    )
    model.config = cfg
    return model


def mlp_dim_for(embed_dim: int, ratio: float) -> int:
    """MLP hidden width for a ratio (4.0 in the paper's variants)."""
    return int(math.floor(embed_dim * ratio))

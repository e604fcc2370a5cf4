"""The paper's vision model: a one-block MLP-Mixer (Tolstikhin et al. 2021), trained from scratch.

Every weight sits in a plain ``nn.Linear`` (patch embedding, the four mixing layers, the head),
so ``target_modules=ALL_LINEAR`` gives LoRA-ML its rank-1 adapter on every one of them, as the
official code does; biases are kept (the official adapter layer drops them: a defect we do not
reproduce). The forward follows the Hugging Face convention (``pixel_values``, ``labels`` ->
``.loss``, ``.logits``), so :func:`metanb.retrain.retrain` and :mod:`metanb.finetune` train and
score it like any classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metanb.errors import MetanbError

ALL_LINEAR = r".+"  # a target_modules regex that matches every nn.Linear of the model
HEAD = "head"  # the output layer (task_heads / finetune_head)


@dataclass(frozen=True)
class MixerConfig:
    """The official sizes by default (CIFAR-10: 32 x 32 x 3, patch 4 -> 64 patches)."""

    image_size: int = 32
    patch_size: int = 4
    channels: int = 3
    dim: int = 512
    depth: int = 1
    token_expansion: float = 4.0  # token-mixing MLP: patches -> 4 x patches -> patches
    channel_expansion: float = 0.5  # channel-mixing MLP: dim -> dim / 2 -> dim
    dropout: float = 0.1
    num_classes: int = 2

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "channels", "dim", "depth", "num_classes"):
            if getattr(self, name) < 1:
                raise MetanbError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise MetanbError(f"patch_size {self.patch_size} does not divide image_size "
                              f"{self.image_size}")
        if min(self.token_expansion, self.channel_expansion) <= 0:
            raise MetanbError("expansion factors must be > 0")
        if not 0 <= self.dropout < 1:
            raise MetanbError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def patch_dim(self) -> int:
        return self.channels * self.patch_size ** 2


# 8 x 8 grey digits: patch 2 gives 16 patches (as 4 does for 32 x 32); dim 64 keeps CPU runs quick
DIGITS_MIXER = MixerConfig(image_size=8, patch_size=2, channels=1, dim=64)


@dataclass
class MixerOutput:
    """What a Hugging Face classifier returns: the loss when labels were given, and logits."""

    loss: torch.Tensor | None
    logits: torch.Tensor


class FeedForward(nn.Module):
    """Linear -> GELU -> dropout -> Linear -> dropout, on the last dimension."""

    def __init__(self, width: int, expansion: float, dropout: float) -> None:
        super().__init__()
        inner = max(1, int(width * expansion))
        self.fc1 = nn.Linear(width, inner)
        self.fc2 = nn.Linear(inner, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(nn.functional.gelu(self.fc1(x)))))


class MixerBlock(nn.Module):
    """Pre-norm residual token mixing (across patches), then channel mixing (across features)."""

    def __init__(self, config: MixerConfig) -> None:
        super().__init__()
        self.token_norm = nn.LayerNorm(config.dim)
        self.token = FeedForward(config.num_patches, config.token_expansion, config.dropout)
        self.channel_norm = nn.LayerNorm(config.dim)
        self.channel = FeedForward(config.dim, config.channel_expansion, config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, patches, dim)
        x = x + self.token(self.token_norm(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel(self.channel_norm(x))


def to_patches(pixel_values: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, p * p * C): row-major patches, each flattened (p, p, C)."""
    b, c, h, w = pixel_values.shape
    x = pixel_values.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class MLPMixer(nn.Module):
    """Patch embedding, ``depth`` mixer blocks, LayerNorm, mean over patches, linear head."""

    def __init__(self, config: MixerConfig | None = None) -> None:
        super().__init__()
        self.config = config or MixerConfig()
        c = self.config
        self.embed = nn.Linear(c.patch_dim, c.dim)
        self.blocks = nn.ModuleList(MixerBlock(c) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.num_classes)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None
                ) -> MixerOutput:
        c = self.config
        expected = (c.channels, c.image_size, c.image_size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise MetanbError(f"pixel_values must be (B, {', '.join(map(str, expected))}), got "
                              f"{tuple(pixel_values.shape)}")
        x = self.embed(to_patches(pixel_values, c.patch_size))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x).mean(dim=1))
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return MixerOutput(loss, logits)

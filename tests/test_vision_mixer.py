"""The MLP-Mixer: official sizes, shapes, the HF output convention, LoRA on every Linear."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metanb.errors import MetanbError
from metanb.lora import MultiLoraConfig, add_multi_lora, multi_lora_layers, use_tasks
from metanb.vision.mixer import ALL_LINEAR, DIGITS_MIXER, MixerConfig, MLPMixer, to_patches


def linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def test_official_sizes_give_the_official_layer_shapes():
    model = MLPMixer()  # image 32, patch 4, dim 512, depth 1, x4 tokens, x0.5 channels, 2 classes
    shapes = {n: tuple(m.weight.shape) for n, m in model.named_modules()
              if isinstance(m, nn.Linear)}
    assert shapes == {
        "embed": (512, 48),  # 3 * 4 * 4 pixels per patch
        "blocks.0.token.fc1": (256, 64), "blocks.0.token.fc2": (64, 256),  # 64 patches x4
        "blocks.0.channel.fc1": (256, 512), "blocks.0.channel.fc2": (512, 256),  # dim x0.5
        "head": (2, 512),
    }
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Linear))
    assert model.blocks[0].token.drop.p == pytest.approx(0.1)


def test_forward_returns_loss_and_logits_like_a_hf_classifier():
    torch.manual_seed(0)
    model = MLPMixer(DIGITS_MIXER).eval()
    x, y = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 1, 0, 1])
    out = model(pixel_values=x, labels=y)
    assert out.logits.shape == (5, 2)
    assert out.loss.item() == pytest.approx(nn.functional.cross_entropy(out.logits, y).item())
    assert model(pixel_values=x).loss is None


def test_patches_are_row_major_and_flattened_per_patch():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    p = to_patches(x, 2)
    assert p.shape == (2, 4, 12)
    # second patch of image 1 = rows 0-1, columns 2-3, as (row, col, channel)
    expected = x[1, :, 0:2, 2:4].permute(1, 2, 0).reshape(-1)
    assert torch.equal(p[1, 1], expected)


def test_wrong_image_shape_and_bad_config_are_one_line_errors():
    with pytest.raises(MetanbError,
                       match=r"pixel_values must be \(B, 1, 8, 8\), got \(2, 3, 8, 8\)"):
        MLPMixer(DIGITS_MIXER)(torch.zeros(2, 3, 8, 8))
    with pytest.raises(MetanbError, match="patch_size 3 does not divide image_size 32"):
        MixerConfig(patch_size=3)


def test_lora_adapts_every_linear_keeps_biases_and_starts_at_the_base():
    torch.manual_seed(0)
    model = MLPMixer(DIGITS_MIXER).eval()
    x = torch.randn(4, 1, 8, 8)
    before = model(x).logits
    names = linear_names(model)
    add_multi_lora(model, MultiLoraConfig(num_tasks=4, rank=1, alpha=1.0,
                                          target_modules=ALL_LINEAR))
    layers = multi_lora_layers(model)
    assert sorted(layers) == sorted(names) and len(names) == 6  # patch embedding, head included
    assert all(layer.bias is not None for layer in layers.values())
    with use_tasks(model, [0, 1, 2, 3]):
        assert torch.allclose(model(x).logits, before, atol=1e-6)  # B = 0: the base exactly
        for layer in layers.values():  # a task's adapter changes only its own examples
            layer.lora_B.data[2] = 1.0
        after = model(x).logits
    changed = (after - before).abs().sum(-1) > 1e-4
    assert changed.tolist() == [False, False, True, False]

"""One shape's pictures from an exported encoder: its multi-crop, the masks of a global crop, and what the
encoder looks at: the ViT's CLS attention, or a point network's per-point saliency.

The crops, patches and masks are made by the pipeline's and the model's own functions
(`pipeline.crops.multi_crop`, `model.patchify.patchify`, `model.masking.inverse_block_mask`) with the
encoder's model config, so the pictures show exactly what pretraining feeds the networks. Attention is
drawn over the whole shape (uniformly subsampled to a global crop's size), as evaluation sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from launch.pictures.clouds import attention_figure, crops_figure, masks_figure, saliency_figure
from model.backbone import Backbone
from model.config import ModelConfig
from model.encoder import PointEncoder
from model.masking import inverse_block_mask
from model.patchify import Patches, normalize_unit_sphere, patchify
from pipeline.config import MultiCropConfig
from pipeline.crops import Crops, multi_crop

# The reference's crop sizes are 16 points per patch (1024 / 64 global, 256 / 16 local), and the tiny
# config keeps the ratio (512 / 32, 128 / 8): the default crop size when none is given.
POINTS_PER_PATCH = 16


@dataclass(frozen=True)
class Shape:
    name: str  # shown in titles: where the shape comes from
    points: np.ndarray  # (N, 3) float32


@dataclass
class SampleViews:
    """What pretraining makes of one shape: padded crops, the global crops' patches and their masks."""

    global_crops: Crops
    local_crops: Crops | None
    global_patches: Patches  # Cg crops
    masks: torch.Tensor | None  # (Cg * M, P) bool, True = masked; None if the model does not mask


def crop_spec(cfg: ModelConfig, global_points: int | None = None, local_points: int | None = None
              ) -> MultiCropConfig:
    """The model's crop counts with the reference's crop scales; sizes default to 16 points per patch."""
    defaults = MultiCropConfig()
    pc = cfg.patchify
    global_crops = {**defaults.global_crops.model_dump(), "count": cfg.num_global_crops,
                    "points": global_points or POINTS_PER_PATCH * pc.global_patches}
    local_crops = None
    if cfg.uses_cls and cfg.num_local_crops > 0:
        local_crops = {**defaults.local_crops.model_dump(), "count": cfg.num_local_crops,
                       "points": local_points or POINTS_PER_PATCH * pc.local_patches}
    return MultiCropConfig(global_crops=global_crops, local_crops=local_crops, augment=defaults.augment)


def sample_views(points: np.ndarray, cfg: ModelConfig, spec: MultiCropConfig, seed: int) -> SampleViews:
    """Crop, patchify and mask one (N, 3) cloud as pretraining does; every draw follows from `seed`."""
    global_crops, local_crops = multi_crop(points, spec, np.random.default_rng(seed))
    generator = torch.Generator().manual_seed(seed)
    patches = patchify(torch.from_numpy(global_crops.points), torch.from_numpy(global_crops.num_points),
                       cfg.patchify.global_patches, cfg.patchify.patch_size, generator=generator)
    masks = inverse_block_mask(patches.centers, cfg.masking, generator) if cfg.uses_masking else None
    return SampleViews(global_crops, local_crops, patches, masks)


def uniform_subsample(points: np.ndarray, num_points: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (1, n, 3) cloud of `num_points` points drawn uniformly without replacement, and its count (1,)."""
    keep = np.random.default_rng(seed).choice(len(points), min(num_points, len(points)), replace=False)
    cloud = torch.from_numpy(np.ascontiguousarray(points[keep], dtype=np.float32))[None]
    return cloud, torch.tensor([cloud.shape[1]])


@torch.no_grad()
def shape_attention(encoder: PointEncoder, points: np.ndarray, cfg: ModelConfig, num_points: int, block: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points (n, 3), centres (P, 3), attention (heads, P)) of the whole shape, in normalised coordinates.

    The shape is subsampled uniformly without replacement to `num_points` (a global crop's size) and
    patchified like a global crop; `block` picks the transformer block (negative: from the end).
    """
    cloud, count = uniform_subsample(points, num_points, seed)
    generator = torch.Generator().manual_seed(seed)
    patches = patchify(cloud, count, cfg.patchify.global_patches, cfg.patchify.patch_size, generator=generator)
    device = next(encoder.parameters()).device  # the encoder casts coordinates to its own dtype
    patches = Patches(*(t.to(device) for t in (patches.centers, patches.neighborhoods, patches.center_idx,
                                               patches.patch_idx)))
    (maps,) = encoder.cls_attention(patches, [block]).values()
    normalised = normalize_unit_sphere(cloud, count)[0]
    return normalised.numpy(), patches.centers[0].cpu().numpy(), maps[0].cpu().numpy()


def shape_saliency(encoder: Backbone, points: np.ndarray, num_points: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(points (n, 3) normalised, saliency (n,)): for each point, the norm of the gradient of the global
    embedding's L2 norm with respect to its coordinates, with the encoder in eval mode.

    The shape is subsampled uniformly to `num_points` (a global crop's size), as `shape_attention` does.
    """
    cloud, count = uniform_subsample(points, num_points, seed)
    param = next(encoder.parameters())
    was_training = encoder.training
    encoder.eval()
    try:
        inputs = encoder.prepare(cloud.to(param.device, param.dtype), count.to(param.device))
        coords = inputs.points.detach().requires_grad_(True)
        inputs.points = coords
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(encoder.embedding(encoder(inputs)).norm(), coords)
    finally:
        encoder.train(was_training)
    return coords[0].detach().cpu().numpy(), grad[0].norm(dim=-1).cpu().numpy()


def sample_figures(shape: Shape, encoder: Backbone, cfg: ModelConfig, spec: MultiCropConfig, seed: int,
                   block: int = -1) -> dict[str, Figure]:
    """{'crops', 'masks', 'attention' | 'saliency': Figure} of one shape; 'masks' only if the model masks,
    'attention' for a ViT with a CLS token and 'saliency' for a backbone without patch tokens."""
    views = sample_views(shape.points, cfg, spec, seed)
    g, loc = views.global_crops, views.local_crops
    figures = {"crops": crops_figure(g.points, g.num_points, None if loc is None else loc.points,
                                     None if loc is None else loc.num_points, source=shape.points,
                                     title=f"Multi-crop of {shape.name}")}
    if views.masks is not None:
        m = cfg.masking.num_masks
        figures["masks"] = masks_figure(views.global_patches.centers[0], views.global_patches.neighborhoods[0],
                                        views.masks[:m], title=f"Inverse block masks of global crop 1 of {shape.name} "
                                        f"({cfg.patchify.global_patches} patches)")
    if not encoder.has_patch_tokens:
        points, saliency = shape_saliency(encoder, shape.points, spec.global_crops.points, seed)
        figures["saliency"] = saliency_figure(points, saliency, title=(
            f"Teacher {cfg.backbone} saliency (embedding gradient norm per point) on {shape.name}"))
    elif encoder.has_cls:
        points, centers, attention = shape_attention(encoder, shape.points, cfg, spec.global_crops.points, block, seed)
        depth = len(encoder.blocks)
        figures["attention"] = attention_figure(points, centers, attention, title=(
            f"Teacher CLS-to-patch attention, block {block % depth + 1} of {depth}, on {shape.name}"))
    return figures

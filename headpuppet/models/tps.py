"""A batched, differentiable thin-plate-spline warp in torch, and the pose-based choice of a source shot.

The warp-guided generator (:mod:`headpuppet.models.warp_generator`) moves the pixels of a source
shot so that its 68 landmarks land on the target's, exactly as the training-free ``warp`` baseline
(:func:`headpuppet.evaluation.baselines.tps_warp`, numpy + OpenCV) does, but for a whole batch at once, on
any device, with gradients flowing to the image. The spline is the same: solved backwards (for
each output pixel, where to sample in the source), image corners and edge midpoints pinned, a
small regulariser, coordinates normalised by the image size, evaluated on a grid of at most
64 x 64 nodes and interpolated bilinearly; ``tests/test_warp_generator.py`` checks the two agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["tps_sample_grid", "tps_warp", "nearest_shot"]


def _anchors(size: int, device, dtype) -> torch.Tensor:
    m = float(size - 1)
    h = m / 2
    return torch.tensor([[0, 0], [h, 0], [m, 0], [m, h], [m, m], [h, m], [0, m], [0, h]], device=device, dtype=dtype)


def _kernel(r2: torch.Tensor) -> torch.Tensor:
    # U(r) = r^2 log r^2 with U(0) = 0
    return torch.where(r2 > 0, r2 * torch.log(r2.clamp_min(1e-30)), torch.zeros_like(r2))


def tps_sample_grid(src_points: torch.Tensor, dst_points: torch.Tensor, size: int, reg: float = 1e-3,
                    nodes: int = 64) -> torch.Tensor:
    """The sampling grid of the warp moving ``src_points`` onto ``dst_points``.

    Args:
        src_points: ``(B, N, 2)`` landmarks (x, y) in pixels of the source image (side ``size``).
        dst_points: ``(B, N, 2)`` where they must land in the output, in pixels.
        size: side of the square images.
        reg: the spline's regulariser (on coordinates divided by ``size``).
        nodes: the spline is evaluated on at most ``nodes x nodes`` points, then interpolated.

    Returns:
        ``(B, size, size, 2)`` source positions in ``grid_sample``'s [-1, 1] convention
        (``align_corners=True``: -1 and 1 are the centres of the first and last pixel).
    """
    b = src_points.shape[0]
    dev = src_points.device
    # float64 for the solve: the system mixes r^2 log r^2 terms with a regulariser of 1e-3
    anchors = _anchors(size, dev, torch.float64).expand(b, -1, -1)
    dst = torch.cat([dst_points.double(), anchors], 1) / size    # (B, n, 2) output positions
    src = torch.cat([src_points.double(), anchors], 1) / size    # (B, n, 2) where they sample from
    n = dst.shape[1]
    K = _kernel(((dst[:, :, None] - dst[:, None]) ** 2).sum(-1)) + reg * torch.eye(n, device=dev, dtype=torch.float64)
    P = torch.cat([torch.ones(b, n, 1, device=dev, dtype=torch.float64), dst], 2)      # (B, n, 3)
    L = torch.zeros(b, n + 3, n + 3, device=dev, dtype=torch.float64)
    L[:, :n, :n], L[:, :n, n:], L[:, n:, :n] = K, P, P.transpose(1, 2)
    rhs = torch.zeros(b, n + 3, 2, device=dev, dtype=torch.float64)
    rhs[:, :n] = src
    coef = torch.linalg.solve(L, rhs)                                                  # (B, n+3, 2)
    # evaluated in float32 (the solve above needs float64, the evaluation does not: within 0.02 px of
    # float64 at 128-256 px, 13x faster on CPU), r^2 = |x|^2 + |c|^2 - 2 x.c as one batched matmul
    # (autocast off: a bf16 matmul here would move pixels by whole pixels)
    with torch.autocast(dev.type, enabled=False):
        g = min(size, nodes)
        lin = torch.linspace(0, size - 1, g, device=dev, dtype=torch.float32)
        ys, xs = torch.meshgrid(lin, lin, indexing="ij")
        grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)[None] / size              # (1, g*g, 2)
        ctrl, coef = dst.float(), coef.float()
        # in place where autograd allows (no gradient to the points, as always here): each
        # (B, g*g, n) temporary is 10 MB at batch 8 and 64 x 64 nodes
        r2 = (grid * grid).sum(-1)[:, :, None] + (ctrl * ctrl).sum(-1)[:, None, :]         # (B, g*g, n)
        r2.baddbmm_(grid.expand(b, -1, -1), ctrl.transpose(1, 2), alpha=-2)
        r2.clamp_min_(0)
        log_r2 = r2.clamp_min(1e-30).log_()
        U = r2 * log_r2 if r2.requires_grad else r2.mul_(log_r2)                            # U(0) = 0
        mapped = torch.baddbmm(coef[:, n:n + 1] + grid @ coef[:, n + 1:], U, coef[:, :n])  # (B, g*g, 2)
        mapped = (mapped * size).reshape(b, g, g, 2)                                       # source px
    if g != size:
        mapped = F.interpolate(mapped.permute(0, 3, 1, 2), size=(size, size), mode="bilinear",
                               align_corners=True).permute(0, 2, 3, 1)
    return (mapped / (size - 1) * 2 - 1).to(src_points.dtype if src_points.is_floating_point() else torch.float32)


def tps_warp(image: torch.Tensor, src_points: torch.Tensor, dst_points: torch.Tensor,
             reg: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp ``image`` ``(B, C, S, S)`` so ``src_points`` ``(B, N, 2)`` land on ``dst_points``.

    Returns ``(warped (B, C, S, S), valid (B, 1, S, S))``: ``valid`` is 1 where the output pixel
    sampled inside the source image and falls to 0 where it had to repeat the border.
    """
    size = image.shape[-1]
    grid = tps_sample_grid(src_points, dst_points, size, reg).to(image.dtype)   # (B, S, S, 2)
    warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
    # soft validity: 1 inside, ramping to 0 one pixel past the border
    over = (grid.abs() - 1).clamp_min(0) * (size - 1) / 2                       # (B, S, S, 2) px outside
    valid = (1 - over.amax(-1)).clamp(0, 1)[:, None]                            # (B, 1, S, S)
    return warped, valid


def _normalise(points: torch.Tensor) -> torch.Tensor:
    c = points - points.mean(-2, keepdim=True)
    return c / (c ** 2).sum(-1).mean(-1).sqrt().clamp_min(1e-6)[..., None, None]


def nearest_shot(shot_points: torch.Tensor, target_points: torch.Tensor,
                 allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Index of the shot whose landmarks are closest to each target's.

    The same distance as the ``warp`` baseline (:func:`headpuppet.evaluation.baselines.nearest_shot`): shape
    (landmarks normalised for position and scale) plus placement (pixels relative to face size).

    Args:
        shot_points: ``(B, K, 68, 2)``.
        target_points: ``(B, 68, 2)``.
        allowed: ``(B, K)`` bool, shots that may be chosen (fine-tuning leaves the target's own frame
            out); at least one per row.

    Returns:
        ``(B,)`` long.
    """
    ns, nt = _normalise(shot_points), _normalise(target_points)
    shape = ((nt[:, None] - ns) ** 2).sum(-1).mean(-1)                                          # (B, K)
    scale2 = ((target_points - target_points.mean(-2, keepdim=True)) ** 2).sum(-1).mean(-1)     # (B,)
    place = ((target_points[:, None] - shot_points) ** 2).sum(-1).mean(-1) / (scale2[:, None] + 1e-6)
    dist = shape + place
    if allowed is not None:
        dist = dist.masked_fill(~allowed, float("inf"))
    return dist.argmin(1)

"""Training-batch augmentation on tensors: random crop with padding and horizontal flip.

The CIFAR recipe of the authors' code (RandomHorizontalFlip, RandomCrop(32, padding=4);
[authors' code] misc/models) for a whole batch at once, without torchvision:
  pad      = H // 8                     4 for 32x32 (the recipe), 3 for 28x28 (the same 1/8)
  padded   = x padded by `pad` on each side with `fill` (N, C, H + 2 pad, W + 2 pad)
  dy, dx   = randint(0, 2 pad + 1)      (N,) each, one window per sample
  x        = padded[n, c, dy + i, dx + j]  one gather for the batch
  flip     = rand < 0.5                 (N,) mirror along the width
`fill` is each channel's value of a black (raw 0) pixel after the data set's normalisation, so
padding is black as torchvision's crop before Normalize; the data sets here are normalised
already, so that value is the smallest training value of the channel (data sets with black
pixels: MNIST, Fashion-MNIST, CIFAR). Only training batches are augmented; evaluation sees the
images as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scadles.errors import UserError

AUGMENTATIONS: dict[str, tuple[bool, bool]] = {  # name -> (crop, flip)
    "none": (False, False),
    "crop": (True, False),
    "crop_flip": (True, True),
}


def crop_padding(height: int) -> int:
    """Return the crop's zero padding: 1/8 of the image side (4 for 32x32, 3 for 28x28)."""
    return max(1, height // 8)


@dataclass(frozen=True, slots=True)
class Augment:
    """Random crop (padding `pad`, filled with `fill`) and optional horizontal flip."""

    pad: int
    flip: bool
    fill: torch.Tensor  # (C,) per-channel padding value
    crop: bool = True

    def offsets(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Return each sample's crop window corner in the padded image, (N,) each in [0, 2 pad]."""
        hi = 2 * self.pad + 1
        dy = torch.randint(0, hi, (n,), generator=gen)  # (N,)
        dx = torch.randint(0, hi, (n,), generator=gen)  # (N,)
        return dy, dx

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Return an augmented copy of the batch x (N, C, H, W); draws from gen only."""
        n, c, h, w = x.shape
        if n == 0:
            return x
        out = x
        if self.crop and self.pad > 0:
            p = self.pad
            padded = self.fill.to(x.dtype).view(1, c, 1, 1).expand(n, c, h + 2 * p, w + 2 * p)
            padded = padded.clone()  # (N, C, H + 2p, W + 2p)
            padded[:, :, p : p + h, p : p + w] = x
            dy, dx = self.offsets(n, gen)
            rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (N, 1, H, 1)
            cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (N, 1, 1, W)
            ns = torch.arange(n)[:, None, None, None]  # (N, 1, 1, 1)
            cs = torch.arange(c)[None, :, None, None]  # (1, C, 1, 1)
            out = padded[ns, cs, rows, cols]  # (N, C, H, W)
        if self.flip:
            mirror = torch.rand(n, generator=gen) < 0.5  # (N,)
            out = torch.where(mirror[:, None, None, None], out.flip(-1), out)
        return out


def make_augment(name: str, x_train: torch.Tensor, what: str = "data") -> Augment | None:
    """Return the augmentation `name` for images shaped like x_train (N, C, H, W), or None."""
    crop, flip = AUGMENTATIONS[name]
    if not (crop or flip):
        return None
    if x_train.ndim != 4 or x_train.shape[0] == 0:
        shape = tuple(x_train.shape[1:])
        raise UserError(
            f"data.augment = {name!r} needs images (C, H, W); {what} has samples of shape {shape}"
        )
    fill = x_train.amin(dim=(0, 2, 3))  # (C,) a black pixel, normalised
    return Augment(pad=crop_padding(int(x_train.shape[2])), flip=flip, fill=fill, crop=crop)

"""Sample pictures: the image grid written with Pillow holds exactly the tiled samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fewstep.bench.plots import save_samples, tile_images


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid_png_holds_the_tiled_samples(tmp_path, channels):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(11, channels, 5, 4, generator=g, dtype=torch.float64) * 2 - 1
    path = save_samples(x, tmp_path / "g.png", title="a title")
    img = np.asarray(Image.open(path))
    grid = tile_images(x)  # [2 * 7, 8 * 6, C]: 11 tiles in rows of 8, white borders and empty cells
    assert grid.shape == (14, 48, channels)
    scale = 80 // 6
    body = img[-grid.shape[0] * scale:]  # the title band sits above the grid
    assert body.shape[:2] == (grid.shape[0] * scale, grid.shape[1] * scale)
    body = body.reshape(*body.shape[:2], -1)
    expect = (grid * 255).round().to(torch.uint8).repeat_interleave(scale, 0).repeat_interleave(scale, 1).numpy()
    np.testing.assert_array_equal(body, expect)
    # a pixel inside the third tile is that sample's value; the empty 12th cell is white
    row0 = 1 * scale
    assert body[row0, (2 * 6 + 1) * scale, 0] == round(float((x[2, 0, 0, 0] + 1) / 2) * 255)
    assert (body[8 * scale:, 3 * 6 * scale:] == 255).all()


def test_image_grid_rejects_two_channels(tmp_path):
    with pytest.raises(ValueError, match="1 or 3 channels"):
        save_samples(torch.zeros(2, 2, 4, 4), tmp_path / "g.png")

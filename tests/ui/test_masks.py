"""Editor strokes and uploaded masks become the request's mask: any painted pixel is white."""
from __future__ import annotations

import numpy as np
from PIL import Image

from webui.ui.masks import editor_image_and_mask, layers_mask, uploaded_mask


def test_any_painted_pixel_on_any_layer_is_masked() -> None:
    first = Image.new("RGBA", (32, 16), (0, 0, 0, 0))
    first.putpixel((3, 4), (255, 0, 0, 1))  # barely visible still counts
    second = Image.new("RGBA", (32, 16), (0, 0, 0, 0))
    second.paste((0, 0, 255, 255), (20, 10, 25, 14))
    mask = layers_mask([first, None, second], (32, 16))
    array = np.asarray(mask)
    assert mask.mode == "L" and set(np.unique(array)) == {0, 255}
    assert array[4, 3] == 255 and array[10:14, 20:25].min() == 255
    assert int((array == 255).sum()) == 1 + 5 * 4


def test_nothing_painted_gives_no_mask() -> None:
    assert layers_mask([Image.new("RGBA", (8, 8), (255, 255, 255, 0))], (8, 8)) is None
    assert layers_mask([], (8, 8)) is None


def test_layers_of_another_size_are_scaled_to_the_picture() -> None:
    layer = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (0, 0, 8, 16))
    mask = layers_mask([layer], (32, 32))
    assert mask.size == (32, 32) and mask.getbbox() == (0, 0, 16, 32)


def test_uploaded_mask_white_is_masked_and_transparent_is_not() -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 255, 255, 0))
    rgba.paste((255, 255, 255, 255), (0, 0, 5, 10))
    assert uploaded_mask(rgba, (10, 10)).getbbox() == (0, 0, 5, 10)
    gray = Image.new("L", (5, 5), 0)
    gray.putpixel((2, 2), 255)
    assert uploaded_mask(gray, (10, 10)).getbbox() == (4, 4, 6, 6)
    assert uploaded_mask(None, (10, 10)) is None


def test_editor_value_gives_rgb_picture_and_mask_and_upload_wins() -> None:
    picture = Image.new("RGBA", (16, 16), (9, 9, 9, 255))
    layer = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    layer.putpixel((1, 1), (255, 255, 255, 255))
    image, mask = editor_image_and_mask({"background": picture, "layers": [layer], "composite": picture})
    assert image.mode == "RGB" and mask.getbbox() == (1, 1, 2, 2)
    upload = Image.new("L", (16, 16), 0)
    upload.paste(255, (8, 8, 16, 16))
    image, mask = editor_image_and_mask({"background": picture, "layers": [layer], "composite": picture}, upload)
    assert mask.getbbox() == (8, 8, 16, 16)
    assert editor_image_and_mask(None) == (None, None)
    assert editor_image_and_mask({"background": None, "layers": [], "composite": None}) == (None, None)

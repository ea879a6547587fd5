"""A tiny random-weight ESRGAN (RRDBNet) upscaler, built with spandrel's own architecture class and saved as
safetensors, for tests of the upscalers, hires fix, the Extras tab and /sdapi/v1/extra-single-image."""
from __future__ import annotations

from pathlib import Path


def make_tiny_esrgan(path: Path, scale: int = 2, seed: int = 0) -> Path:
    """Write an ESRGAN with 8 filters and one RRDB block (about 0.2 M parameters) to `path`."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    model = ESRGAN(num_filters=8, num_blocks=1, scale=scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path

"""EaselPipeline: text-to-image, img2img, inpainting and instruction editing with Easel's built-in model.

The pipeline works in pixel space: its "latents" are images [B,3,H,W] in [-1,1]. The transformer predicts the
clean image x0; each step turns that into the flow-matching velocity v = (x_t - x0) / sigma that diffusers'
FlowMatch schedulers (Euler by default, Heun when swapped in) integrate. Classifier-free guidance mixes the x0
predictions with and without the prompt. A self-conditioned transformer also reads each branch's x0 prediction of
the previous step (others ignore it). Modes, chosen by the arguments:
  - txt2img: no image;
  - img2img: `image` + `strength` (run the last `strength` share of the steps, from the image noised to the
    first one's sigma);
  - inpaint: `image` + `mask_image` (white = repaint), using the trained inpainting conditioning; pixels outside
    the mask are pasted back, so they are exactly unchanged;
  - edit: `source_image` + an instruction prompt ("make the red circle blue", "highlight the star").
In txt2img, `plan_layout` (the model's default is in model_index.json) first gives every object the prompt places
nowhere a grid position drawn from the image's generator (webui/builtin/layout.py): "a red circle" becomes, say,
"a red circle in the top right", which the model draws as one circle instead of faint copies in several places.
With two or more planned objects, `redraw_objects` then inpaints each object's box once more with only that
object's words, so each gets its own colour and shape (the whole-scene pass often gives both the same shape).

LoRAs go on the transformer through PEFT, with the method names of diffusers' pipelines (`load_lora_weights`,
`set_adapters`, ...), and may carry a learned trigger word: see lora.py.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from webui.builtin import data as D
from webui.builtin.layout import Plan, plan, redraw_mask, unknown_words
from webui.builtin.lora import EaselLoraLoaderMixin
from webui.builtin.model import EaselTransformer
from webui.builtin.text import EaselTextEncoder

logger = logging.getLogger(__name__)

ImageInput = Image.Image | np.ndarray | torch.Tensor | list | tuple


@dataclass
class EaselPipelineOutput(ImagePipelineOutput):
    """The images, and per image the prompt as the model read it: with its planned layout written in where the
    layout was planned, else the prompt as given."""

    planned_prompts: list[str] = field(default_factory=list)
    # per image, the prompt's words the model did not understand: neither the layout planner (when it planned)
    # nor the model's vocabulary (or an active LoRA's learned words) holds them, so they changed nothing
    unknown_words: list[list[str]] = field(default_factory=list)


def settle_background(redrawn: torch.Tensor, before: torch.Tensor, mask: torch.Tensor, tolerance: float = 35.0,
                      colors: torch.Tensor | None = None) -> torch.Tensor:
    """Clean a redrawn box. The inpainting passes leave a faint speckle and, now and then, dots of other colours in
    a box's background; the redrawn object stays. Images [B,3,H,W] and mask [B,1,H,W] in [0,1]; distances are RGB
    on the 0-255 scale; the background colour is the median of `before`'s border pixels.
      - a redrawn pixel within `tolerance` of the background takes `before`'s pixel where that is background too,
        else the background colour;
      - given `colors` ([B,3] in [0,1], each box's object colour), a redrawn pixel farther than `tolerance` from
        the line between the background and that colour (neither the object nor its anti-aliased edge) takes
        `before`'s pixel where that is background or off the line too (another object reaching into the box),
        else the background colour."""
    border = torch.cat([before[..., 0, :], before[..., -1, :], before[..., :, 0], before[..., :, -1]], dim=-1)
    background = border.median(dim=-1).values[..., None, None]  # [B,3,1,1]
    tol = tolerance / 255.0
    inside = mask > 0.5  # [B,1,H,W]
    near = (redrawn - background).norm(dim=1, keepdim=True) < tol
    was_near = (before - background).norm(dim=1, keepdim=True) < tol
    fill = background.expand_as(before)
    out = torch.where(inside & near, torch.where(was_near, before, fill), redrawn)
    if colors is None:
        return out

    def off_line(x: torch.Tensor) -> torch.Tensor:  # [B,1,H,W]: farther than tol from the background-colour line
        span = colors.to(x)[..., None, None] - background  # [B,3,1,1]
        along = ((x - background) * span).sum(dim=1, keepdim=True) / (span * span).sum(
            dim=1, keepdim=True).clamp_min(1e-6)  # [B,1,H,W]
        return (x - (background + along.clamp(0.0, 1.0) * span)).norm(dim=1, keepdim=True) > tol

    keep_before = was_near | off_line(before)
    return torch.where(inside & ~near & off_line(redrawn), torch.where(keep_before, before, fill), out)


def image_to_tensor(image: ImageInput, height: int, width: int) -> torch.Tensor:
    """PIL / uint8 or [0,1] float HWC array / [0,1] tensor ([3,H,W] or [B,3,H,W]), or a list of them (one per
    image, as diffusers pipelines take) -> [B,3,height,width] in [-1,1]."""
    if isinstance(image, (list, tuple)):
        if not image:
            raise ValueError("expected at least one image, got an empty list")
        return torch.cat([image_to_tensor(item, height, width) for item in image], dim=0)
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        image = np.asarray(image)
    if isinstance(image, np.ndarray):
        arr = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
        if arr.ndim == 3:
            arr = arr[None]
        image = torch.from_numpy(arr).permute(0, 3, 1, 2)  # [B,3,H,W]
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"expected a PIL image, a numpy array or a tensor, got {type(image).__name__}")
    x = image.float()
    if x.ndim == 3:
        x = x[None]
    if x.shape[1] != 3:
        raise ValueError(f"expected 3 colour channels, got a tensor of shape {tuple(x.shape)}")
    if x.shape[-2:] != (height, width):
        x = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return x * 2.0 - 1.0  # [B,3,H,W] in [-1,1]


def _input_batch(image: ImageInput | None) -> int:
    """How many images an image argument holds (1 for a single image or none)."""
    if isinstance(image, (list, tuple)):
        return len(image)
    if isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim == 4:
        return int(image.shape[0])
    return 1


def mask_to_tensor(mask: ImageInput, height: int, width: int) -> torch.Tensor:
    """A mask (white/1 = repaint), or a list of masks -> binary float [B,1,height,width]."""
    if isinstance(mask, (list, tuple)):
        if not mask:
            raise ValueError("expected at least one mask, got an empty list")
        return torch.cat([mask_to_tensor(item, height, width) for item in mask], dim=0)
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L").resize((width, height), Image.Resampling.NEAREST))
    if isinstance(mask, np.ndarray):
        arr = mask.astype(np.float32) / 255.0 if mask.dtype == np.uint8 else mask.astype(np.float32)
        mask = torch.from_numpy(arr)
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"expected the mask as a PIL image, a numpy array or a tensor, got {type(mask).__name__}")
    m = mask.float()
    while m.ndim < 4:
        m = m[None]
    if m.shape[1] != 1:
        m = m.mean(dim=1, keepdim=True)
    if m.shape[-2:] != (height, width):
        m = torch.nn.functional.interpolate(m, size=(height, width), mode="nearest")
    return (m > 0.5).float()  # [B,1,H,W]


class EaselPipeline(DiffusionPipeline, EaselLoraLoaderMixin):
    """Pixel-space x0-predicting diffusion transformer; see the module docstring for the modes."""

    model_cpu_offload_seq = "text_encoder->transformer"
    _callback_tensor_inputs = ["latents", "text", "text_mask"]  # a callback may hand back new text features

    def __init__(self, transformer: EaselTransformer, text_encoder: EaselTextEncoder,
                 scheduler: FlowMatchEulerDiscreteScheduler, guidance_interval: list[float] | None = None,
                 plan_layout: bool = False, redraw_objects: bool = False) -> None:
        super().__init__()
        self.register_modules(transformer=transformer, text_encoder=text_encoder, scheduler=scheduler)
        if guidance_interval is not None:
            guidance_interval = list(self.guidance_window(guidance_interval))
        # the model's defaults for `__call__(guidance_interval=None, plan_layout=None, redraw_objects=None)`,
        # saved in model_index.json
        self.register_to_config(guidance_interval=guidance_interval, plan_layout=bool(plan_layout),
                                redraw_objects=bool(redraw_objects))
        self._interrupt = False
        self._guidance_scale = 1.0
        self._num_timesteps = 0

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    # ------------------------------------------------------------------------------------------- helpers

    @staticmethod
    def _as_list(prompt: str | list[str] | None, n: int | None = None, name: str = "prompt") -> list[str]:
        if prompt is None:
            prompt = ""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"`{name}` must be a string or a non-empty list of strings")
        if n is not None and len(prompts) != n:
            if len(prompts) != 1:
                raise ValueError(f"`{name}` has {len(prompts)} entries but `prompt` has {n}")
            prompts = prompts * n
        return prompts

    def check_inputs(self, height: int, width: int, strength: float, image: ImageInput | None,
                     mask_image: ImageInput | None, source_image: ImageInput | None, num_inference_steps: int,
                     tensor_inputs: list[str]) -> None:
        p = self.transformer.config.patch_size
        if height % p or width % p or height <= 0 or width <= 0:
            raise ValueError(f"`height` and `width` must be positive multiples of {p}, got {height}x{width}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"`strength` must be in (0, 1], got {strength}")
        if num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be at least 1, got {num_inference_steps}")
        if mask_image is not None and image is None:
            raise ValueError("`mask_image` needs `image` (the picture to inpaint)")
        if source_image is not None and (image is not None or mask_image is not None):
            raise ValueError("pass either `source_image` (instruction edit) or `image`/`mask_image`, not both")
        unknown = [k for k in tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"`callback_on_step_end_tensor_inputs` may only hold {self._callback_tensor_inputs}, "
                             f"got {unknown}")

    def encode_prompt(self, prompts: list[str], negative_prompts: list[str], do_cfg: bool
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text features [(2)B,L,dim] and mask [(2)B,L]: negative rows first when guiding."""
        texts = negative_prompts + prompts if do_cfg else prompts
        with torch.no_grad():
            return self.text_encoder.encode(texts, device=self._execution_device, words=self.active_words())

    def guidance_window(self, interval: tuple[float, float] | None = None) -> tuple[float, float]:
        """The noise levels (sigma, 1 = pure noise) at which guidance applies; elsewhere only the prompt's
        branch runs, which also halves the cost of those steps. None: the model's default (model_index.json),
        and without one every step."""
        if interval is None:
            interval = self.config.get("guidance_interval")
        if interval is None:
            return 0.0, 1.0
        try:
            lo, hi = (float(v) for v in interval)
        except (TypeError, ValueError):
            raise ValueError(f"`guidance_interval` must be two numbers (low, high), got {interval!r}") from None
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"`guidance_interval` must satisfy 0 <= low < high <= 1, got ({lo}, {hi})")
        return lo, hi

    def switch(self, name: str, value: bool | None) -> bool:
        """A per-call switch of `__call__` (`plan_layout`, `redraw_objects`): `value`, or when None the model's
        default (model_index.json; off when absent)."""
        return bool(self.config.get(name, False) if value is None else value)

    def plan_layouts(self, prompts: list[str], generator: torch.Generator | list[torch.Generator] | None
                     ) -> list[Plan]:
        """Each prompt's layout, planned from one draw of its image's generator (see layout.py)."""
        if isinstance(generator, list):
            seeds = [int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)) for g in generator]
        else:
            device = generator.device if generator is not None else "cpu"
            seeds = torch.randint(0, 2**62, (len(prompts),), generator=generator, device=device).tolist()
        return [plan(p, random.Random(s)) for p, s in zip(prompts, seeds)]

    def redraw(self, images: torch.Tensor, plans: list[Plan], generator: torch.Generator | list | None,
               **call_kwargs) -> torch.Tensor:
        """Inpaint, object by object, the box of each planned object of a layout of two or more with that object's
        own words ("a large red circle"); pixels outside the box stay as they are. images [B,3,H,W] in [-1,1]
        (returned the same way)."""
        height, width = images.shape[-2:]
        for k in range(max(len(p.objects) for p in plans)):
            rows = [i for i, p in enumerate(plans) if len(p.objects) > 1 and len(p.objects) > k]
            if not rows or self.interrupt:
                break
            masks = [redraw_mask([o.obj for o in plans[i].objects], k) for i in rows]  # [64,64] each
            mask = torch.from_numpy(np.stack(masks))[:, None]  # [R,1,64,64]
            mask = torch.nn.functional.interpolate(mask, size=(height, width), mode="nearest")
            gens = [generator[i] for i in rows] if isinstance(generator, list) else generator
            before = (images[rows].float() + 1.0) / 2.0  # [R,3,H,W] in [0,1]
            out = self(prompt=[plans[i].objects[k].text for i in rows], image=before, mask_image=mask,
                       height=height, width=width, generator=gens, output_type="pt", plan_layout=False,
                       **call_kwargs).images  # [R,3,H,W] in [0,1]
            images = images.clone()
            colors = torch.tensor([D.PALETTE[plans[i].objects[k].obj.color] for i in rows]) / 255.0  # [R,3]
            images[rows] = (settle_background(out, before, mask, colors=colors) * 2.0 - 1.0).to(images.dtype)
        return images

    def get_timesteps(self, num_inference_steps: int, strength: float, device: torch.device
                      ) -> tuple[torch.Tensor, int]:
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        init = min(num_inference_steps * strength, num_inference_steps)
        t_start = int(max(num_inference_steps - init, 0))
        order = getattr(self.scheduler, "order", 1)
        timesteps = self.scheduler.timesteps[t_start * order:]
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(t_start * order)
        return timesteps, len(timesteps)

    def postprocess(self, x: torch.Tensor, output_type: str) -> list[Image.Image] | np.ndarray | torch.Tensor:
        if output_type == "latent":
            return x
        x01 = ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)  # [B,3,H,W]
        if output_type == "pt":
            return x01
        arr = x01.permute(0, 2, 3, 1).cpu().numpy()  # [B,H,W,3]
        if output_type == "np":
            return arr
        if output_type == "pil":
            return [Image.fromarray(a) for a in (arr * 255.0).round().astype(np.uint8)]
        raise ValueError(f"`output_type` must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")

    # ------------------------------------------------------------------------------------------- call

    @torch.no_grad()
    def __call__(self, prompt: str | list[str] = "", negative_prompt: str | list[str] | None = None,
                 height: int = 64, width: int = 64, num_inference_steps: int = 20, guidance_scale: float = 4.0,
                 num_images_per_prompt: int = 1, generator: torch.Generator | list[torch.Generator] | None = None,
                 image: ImageInput | None = None, strength: float = 1.0, mask_image: ImageInput | None = None,
                 source_image: ImageInput | None = None, output_type: str = "pil", return_dict: bool = True,
                 callback_on_step_end: Callable | None = None,
                 callback_on_step_end_tensor_inputs: list[str] | None = None,
                 guidance_interval: tuple[float, float] | None = None, plan_layout: bool | None = None,
                 redraw_objects: bool | None = None, latents: torch.Tensor | None = None
                 ) -> EaselPipelineOutput | tuple:
        # 1. check inputs
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        self.check_inputs(height, width, strength, image, mask_image, source_image, num_inference_steps,
                          tensor_inputs)
        lo, hi = self.guidance_window(guidance_interval)
        prompts = self._as_list(prompt)
        n_inputs = _input_batch(image if image is not None else source_image)
        if len(prompts) == 1 and n_inputs > 1:  # one prompt for a batch of input images, as diffusers takes it
            prompts = prompts * n_inputs
        negatives = self._as_list(negative_prompt, len(prompts), "negative_prompt")
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        negatives = [p for p in negatives for _ in range(num_images_per_prompt)]
        batch = len(prompts)
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for {batch} images; pass one per image")
        self._guidance_scale = guidance_scale
        self._interrupt = False
        device = self._execution_device
        dtype = self.transformer.dtype

        # 2. prepare the noise, text (its layout planned first in txt2img), conditioning images
        if latents is not None:  # the caller's starting noise; the generators still serve the later draws
            if tuple(latents.shape) != (batch, 3, height, width):
                raise ValueError(f"latents have shape {tuple(latents.shape)}; expected {(batch, 3, height, width)}")
            noise = latents.to(device=device, dtype=torch.float32)  # [B,3,H,W]
        else:
            noise = randn_tensor((batch, 3, height, width), generator=generator, device=device, dtype=torch.float32)
        plans = None
        learned = set(self.active_words() or {})
        if self.switch("plan_layout", plan_layout) and image is None and source_image is None:
            plans = self.plan_layouts(prompts, generator)
            not_understood = [[w for w in p.unknown if w not in learned] for p in plans]
            prompts = [p.prompt for p in plans]
        else:
            not_understood = [unknown_words(p, learned) for p in prompts]
        planned = list(prompts)
        text, text_mask = self.encode_prompt(prompts, negatives, self.do_classifier_free_guidance)
        text = text.to(dtype)
        init = mask = source = None
        if image is not None:
            init = image_to_tensor(image, height, width).to(device)  # [1|B,3,H,W]
            init = init.expand(batch, -1, -1, -1) if init.shape[0] == 1 else init
        if mask_image is not None:
            mask = mask_to_tensor(mask_image, height, width).to(device)  # [1|B,1,H,W]
            mask = mask.expand(batch, -1, -1, -1) if mask.shape[0] == 1 else mask
            source = torch.cat([init * (1.0 - mask), mask * 2.0 - 1.0], dim=1)  # [B,4,H,W]
        elif source_image is not None:
            src = image_to_tensor(source_image, height, width).to(device)  # [1|B,3,H,W]
            src = src.expand(batch, -1, -1, -1) if src.shape[0] == 1 else src
            source = torch.cat([src, -torch.ones_like(src[:, :1])], dim=1)  # [B,4,H,W]
        if source is not None and source.shape[0] != batch:
            raise ValueError(f"got {source.shape[0]} images for {batch} prompts")
        if source is not None and self.do_classifier_free_guidance:
            source = torch.cat([source, source], dim=0)  # [2B,4,H,W]
        source = source.to(dtype) if source is not None else None

        timesteps, n_steps = self.get_timesteps(num_inference_steps, strength if init is not None else 1.0, device)
        self._num_timesteps = n_steps
        if init is not None and strength < 1.0 and n_steps > 0:
            sigma0 = timesteps[0].float() / self.scheduler.config.num_train_timesteps
            latents = sigma0 * noise + (1.0 - sigma0) * init  # [B,3,H,W]
        else:
            latents = noise  # [B,3,H,W]

        # 3. denoise
        # a stochastic scheduler (Euler a) draws its fresh noise from the images' generators, so a seed reproduces
        step_kwargs = {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters \
            else {}
        prev = None
        with self.progress_bar(total=n_steps) as progress:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    break
                sigma = (t.float() / self.scheduler.config.num_train_timesteps).clamp(min=1e-4)
                guided = self.do_classifier_free_guidance and lo <= float(sigma) <= hi
                if guided:
                    x_in, rows = torch.cat([latents, latents]), slice(None)
                else:  # only the prompt's branch (the negative rows come first when guiding)
                    x_in, rows = latents, slice(batch if self.do_classifier_free_guidance else 0, None)
                s = sigma.expand(x_in.shape[0]).to(device)
                x0 = self.transformer(x_in.to(dtype), s, text[rows], text_mask[rows],
                                      None if source is None else source[rows],
                                      None if prev is None else prev[rows]).float()  # [(2)B,3,H,W]
                prev = x0.to(dtype)  # each branch's own prediction, read by self-conditioned models
                if guided:
                    x0_uncond, x0_cond = x0.chunk(2)
                    x0 = x0_uncond + guidance_scale * (x0_cond - x0_uncond)  # [B,3,H,W]
                elif self.do_classifier_free_guidance:
                    prev = prev.repeat(2, 1, 1, 1)  # both branches go on from the prompt's prediction
                velocity = (latents - x0) / sigma  # [B,3,H,W]
                latents = self.scheduler.step(velocity, t, latents, return_dict=False, **step_kwargs)[0]
                if callback_on_step_end is not None:
                    scope = locals()
                    kwargs = {k: scope[k] for k in tensor_inputs}
                    outputs = callback_on_step_end(self, i, t, kwargs)
                    if outputs:  # text [(2)B,L,dim] and text_mask [(2)B,L]: negative rows first when guiding
                        latents = outputs.pop("latents", latents)
                        text = outputs.pop("text", text)
                        text_mask = outputs.pop("text_mask", text_mask)
                progress.update()

        # 4. postprocess: paste the original back outside the inpainting mask (or redraw planned objects), convert
        if mask is not None:
            latents = init * (1.0 - mask) + latents.clamp(-1.0, 1.0) * mask  # [B,3,H,W]
        if plans and self.switch("redraw_objects", redraw_objects) and not self.interrupt:
            latents = self.redraw(latents.clamp(-1.0, 1.0), plans, generator, num_inference_steps=num_inference_steps,
                                  guidance_scale=guidance_scale, guidance_interval=guidance_interval,
                                  callback_on_step_end=callback_on_step_end,
                                  callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs)
        images = self.postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return EaselPipelineOutput(images=images, planned_prompts=planned, unknown_words=not_understood)

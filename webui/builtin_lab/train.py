"""Train Easel's built-in model from scratch on procedural scenes (one command, reproducible, resumable).

    python -m webui.builtin_lab.train --out models/builtin/easel-shapes --state-dir ~/.cache/easel/train-builtin \
        --seed 0 --hours 3

Every batch is a pure function of (seed, step), so a run resumed from its state directory continues exactly as
if uninterrupted. The full state (weights, EMA, optimizer, step, elapsed time: tensors and plain data only) is saved
atomically every few minutes and read back with PyTorch's weights-only unpickler, so a state file cannot run code;
the shippable pipeline folder (EMA weights in fp16 safetensors) is written to --out every few more minutes.
`--resume-from-weights` starts from the shipped weights with a fresh optimizer when the state directory is gone.
Objective (webui/builtin/objective.py, which the LoRA trainer shares): x_t = (1 - t) x0 + t eps; the model predicts
x0; the loss is on the implied velocity v = (x_t - x0_hat) / max(t, MIN_T) against (x_t - x0) / max(t, MIN_T)
(= eps - x0 above MIN_T), with logit-normal t (plus 5% near t = 1) and 10% empty prompts for guidance. An auxiliary
loss asks the text encoder's pooled features for what a text-to-image caption says: the background colour (or that
none is named) and how many objects of each colour and shape it names. A second one (the label map) asks the image
tokens of a middle block, in text-to-image examples, which object's shape and colour covers each 4x4-pixel cell: at
high noise the image cannot show that yet, so the tokens have to take it from the caption.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import pickle
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from webui.builtin import data as D
from webui.builtin.objective import (MIN_T, SELF_COND_P, T_MEAN, T_STD, TaskBatch, draw_examples, group_examples,
                                     sample_t, stack, velocity_loss)

logger = logging.getLogger(__name__)

# The sampler spends its steps where training did: the exported scheduler's shift maps uniform steps u to
# t = s u / (1 + (s - 1) u), which moves logit(t) up by log(s).
SAMPLE_SHIFT = 3.0
# Exported models guide only at noise levels sigma >= 0.45 (with 20 steps, the last 5 run the prompt's branch
# alone): below that, guidance mostly redraws what is already there. img2img at strength 0.3 kept the scene in
# 93% of cases against 89%, and no other score fell (step 23743, n=100; docs/BUILTIN.md).
GUIDANCE_INTERVAL = (0.45, 1.0)
AUX_WEIGHT = 0.1  # auxiliary caption loss; 0 turns it off
N_LABELS = 1 + len(D.COLORS) + len(D.SHAPES)  # caption_labels: background class, count per colour and per shape
N_AUX = len(D.COLORS) + 1 + N_LABELS - 1  # the head's outputs: background logits (colours + "not named"), counts
# Label map: the image tokens after a middle block (depth // 2) predict, per MAP_CELL x MAP_CELL pixel
# cell, the shape class (background or one of SHAPES) and the colour class of the object covering the cell's centre
# (the background's colour where none does). Probing weights trained without it showed the prompt's shape word
# changing the x0 prediction by 0.003 on average (on a -1..1 scale) even at t = 0.8: the diffusion loss alone
# barely rewards reading the shape from the text, since the object's few outline pixels weigh little in it. Tried at
# 0.1 for 1500 steps it learned each cell's colour but not its shape, and no better samples: off by default.
MAP_WEIGHT = 0.0
MAP_CELL = 4
MAP_CLASSES = (1 + len(D.SHAPES), len(D.COLORS))  # shape classes, colour classes per cell
# Object weighting: the diffusion loss counts pixels on and near objects (and, in edits, what the edit changes)
# 1 + OBJECT_WEIGHT times, renormalised per image. Objects cover 5-15% of a scene; trained without it, the model drew
# only backgrounds at step 1500 and blobs of roughly the right colour at step 10851.
OBJECT_WEIGHT = 4.0
OBJECT_GROW = 2  # pixels of background around an object that count as part of it
SELF_COND = True  # self-conditioning (--self-cond): the model reads its previous x0 prediction
BLUR_P = 0.0  # share of examples with t >= BLUR_MIN_T whose noisy input is made from a blurred x0 (0 = off)
BLUR_MIN_T = 0.6
BLUR_SIGMAS = (1.0, 2.0, 3.0, 4.0)  # Gaussian blur radii in pixels, one drawn per blurred example
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Batch(TaskBatch):
    """A step's examples (objective.TaskBatch) with the training-only targets of the text-to-image group."""

    gen_aux: torch.Tensor | None = None  # [Bg,1+colours+shapes]: caption_labels of each gen example
    gen_map: torch.Tensor | None = None  # [Bg,2,H/MAP_CELL,W/MAP_CELL] int64: label_map of each gen example
    gen_fg: torch.Tensor | None = None  # [Bg,1,H,W] in [0,1]: the objects' coverage of each gen example's pixels


def caption_labels(ex: D.Example, dropped: bool) -> np.ndarray:
    """What a text-to-image caption says, for the auxiliary loss: [background class, count per colour, count per
    shape]. The class is the background colour's index, len(COLORS) when the caption names none, -1 (ignored, and
    the counts too) when the prompt was dropped."""
    out = np.zeros(N_LABELS, dtype=np.float32)
    if dropped:
        out[0] = -1
        return out
    scene = ex.info["scene"]
    out[0] = D.COLORS.index(scene.background) if ex.info.get("background_named") else len(D.COLORS)
    for o in scene.objects:
        out[1 + D.COLORS.index(o.color)] += 1
        out[1 + len(D.COLORS) + D.SHAPES.index(o.shape)] += 1
    return out


def label_map(ex: D.Example, cell: int = MAP_CELL) -> np.ndarray:
    """[2, H/cell, W/cell] int64: the shape class (0 = background, 1 + SHAPES index) and the colour class (COLORS
    index) at the centre pixel of each cell of a text-to-image example's image."""
    scene = ex.info["scene"]
    h, w = ex.target.shape[:2]
    ys, xs = np.meshgrid(np.arange(cell // 2, h, cell), np.arange(cell // 2, w, cell), indexing="ij")
    shape = np.zeros(ys.shape, np.int64)
    color = np.full(ys.shape, D.COLORS.index(scene.background), np.int64)
    for obj, mask in zip(scene.objects, ex.info["masks"]):
        inside = mask[ys, xs] >= 0.5
        shape[inside] = 1 + D.SHAPES.index(obj.shape)
        color[inside] = D.COLORS.index(obj.color)
    return np.stack([shape, color])


def make_batch(seed: int, step: int, batch_size: int, split: str = "train") -> Batch:
    """The batch of `step`: examples step*batch_size ... (step+1)*batch_size-1 of the split (objective.task_batch),
    with the auxiliary targets of its text-to-image examples."""
    drawn = draw_examples(seed, step, batch_size, split)
    tasks = group_examples(drawn)
    gen = [(ex, dropped) for ex, dropped in drawn if ex.source is None]  # the generation group, in its order
    aux = torch.from_numpy(np.stack([caption_labels(ex, dropped) for ex, dropped in gen])) if gen \
        else torch.zeros(0, N_LABELS)
    maps = torch.from_numpy(np.stack([label_map(ex) for ex, _ in gen])) if gen \
        else torch.zeros(0, 2, D.SIZE // MAP_CELL, D.SIZE // MAP_CELL, dtype=torch.int64)
    fg = stack([np.max(np.stack(ex.info["masks"]), axis=0)[None] for ex, _ in gen], 1)  # [1,H,W] each
    return Batch(tasks.gen_prompts, tasks.gen_target, tasks.cond_prompts, tasks.cond_target, tasks.cond_source,
                 aux, maps, fg)


class BatchStream(torch.utils.data.IterableDataset):
    """Batches for steps start, start+1, ... split round-robin over DataLoader workers (order preserved)."""

    def __init__(self, seed: int, start: int, batch_size: int) -> None:
        self.seed, self.start, self.batch_size = seed, start, batch_size

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, n = (info.id, info.num_workers) if info else (0, 1)
        step = self.start + wid
        while True:
            yield make_batch(self.seed, step, self.batch_size)
            step += n


class Net(nn.Module):
    """The two trained modules together, so one optimizer and one EMA cover both, plus the auxiliary caption head
    and the label-map head (training only: neither is exported). The label-map head reads the output of transformer
    block `map_block` (kept in `self.features` by a forward hook while training)."""

    def __init__(self, transformer: nn.Module, text_encoder: nn.Module, text_dim: int | None = None,
                 map_block: int | None = None) -> None:
        super().__init__()
        self.transformer = transformer
        self.text_encoder = text_encoder
        self.aux = nn.Linear(text_dim, N_AUX) if text_dim else None
        self.map_head = None
        self.features: torch.Tensor | None = None
        if map_block is not None:
            cells = (transformer.config.patch_size // MAP_CELL) ** 2
            self.map_head = nn.Linear(transformer.config.hidden_size, cells * sum(MAP_CLASSES))
            transformer.blocks[map_block].register_forward_hook(self._keep_features)

    def _keep_features(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.features = output if self.training and torch.is_grad_enabled() else None


def build_net(args: argparse.Namespace) -> Net:
    from webui.builtin.model import EaselTransformer
    from webui.builtin.text import EaselTextEncoder

    text_encoder = EaselTextEncoder(vocab=D.vocabulary(), max_length=40, dim=args.text_dim, depth=args.text_depth,
                                    num_heads=args.heads)
    transformer = EaselTransformer(sample_size=D.SIZE, patch_size=args.patch, hidden_size=args.hidden,
                                   depth=args.depth, num_heads=args.heads, bottleneck=args.bottleneck,
                                   text_dim=args.text_dim, source_residual=args.source_residual,
                                   pixel_decoder=args.pixel_decoder, self_condition=args.self_cond)
    map_block = min(args.depth - 1, args.depth // 2) if args.map_weight > 0 else None
    return Net(transformer, text_encoder, args.text_dim, map_block)


def object_weight_map(fg: torch.Tensor, k: float, grow: int = OBJECT_GROW) -> torch.Tensor:
    """Per-pixel loss weights [B,1,H,W] from object coverage fg [B,1,H,W] in [0,1]: 1 + k on the objects and
    `grow` pixels around them (where one shape's outline differs from another's), 1 elsewhere, scaled to mean 1 per
    image so the loss keeps its size."""
    grown = F.max_pool2d(fg.float(), 2 * grow + 1, stride=1, padding=grow)  # [B,1,H,W]
    w = 1.0 + k * grown
    return w / w.mean(dim=(1, 2, 3), keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of images [B,C,H,W] with standard deviation `sigma` pixels (edges reflected), in
    float32 outside any autocast (CPU bf16 depthwise convolutions are very slow)."""
    with torch.autocast(x.device.type, enabled=False):
        return _gaussian_blur(x.float(), sigma).to(x.dtype)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32, device=x.device) / sigma) ** 2)
    k = k / k.sum()
    C = x.shape[1]
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def blur_inputs(x0: torch.Tensor, t: torch.Tensor, gen: torch.Generator, p: float = BLUR_P,
                min_t: float = BLUR_MIN_T) -> torch.Tensor:
    """The clean images that the noisy inputs are made from: x0 [B,3,H,W], except that a share `p` of the examples
    with t >= min_t get a Gaussian blur of a radius drawn from BLUR_SIGMAS. A sampler's state at high noise holds
    a blurred average of the scenes the prompt allows, never a crisp one; trained on such inputs (the target stays
    the crisp x0), the model learns to draw the shape the prompt names out of a blob instead of keeping the blob."""
    if p <= 0:
        return x0
    B = x0.shape[0]
    pick = (torch.rand(B, generator=gen) < p).to(x0.device) & (t >= min_t)  # [B]
    which = torch.randint(len(BLUR_SIGMAS), (B,), generator=gen).to(x0.device)  # [B]
    out = x0
    for i, sigma in enumerate(BLUR_SIGMAS):
        sel = pick & (which == i)
        if bool(sel.any()):
            out = torch.where(sel[:, None, None, None], gaussian_blur(x0, sigma), out)
    return out


def edit_foreground(target: torch.Tensor, source: torch.Tensor, source_objects: bool = False) -> torch.Tensor:
    """What an edit or inpainting example changes: pixels where target and source differ, or inside the
    inpainting mask (source channel 4 > 0); with `source_objects` also every object of the source (pixels away from
    its background colour, the per-channel median), so that an edit that touches the wrong object, or highlights
    one for a query that names none, costs as much as missing the right one.
    target [B,3,H,W], source [B,4,H,W] -> [B,1,H,W] in {0,1}."""
    src = source[:, :3].float()
    changed = (target.float() - src).abs().amax(dim=1, keepdim=True) > 0.02  # [B,1,H,W]
    fg = changed | (source[:, 3:4] > 0)
    if source_objects:
        bg = src.flatten(2).median(dim=2).values[:, :, None, None]  # [B,3,1,1]
        fg = fg | ((src - bg).abs().amax(dim=1, keepdim=True) > 0.02)
    return fg.float()


def aux_loss(head: nn.Module, text: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the background class plus squared error of the colour and shape counts, predicted from the
    masked mean of the text features [B,L,dim]; rows with class -1 (dropped prompts) count for nothing."""
    from webui.builtin.model import pool_text

    out = head(pool_text(text, mask)).float()  # [B,N_AUX], from the same pooled features the transformer gets
    n_bg = len(D.COLORS) + 1
    cls = labels[:, 0].long()  # [B]
    keep = cls >= 0  # [B]
    if not bool(keep.any()):
        return out.sum() * 0.0
    ce = F.cross_entropy(out[keep, :n_bg], cls[keep])
    mse = ((out[keep, n_bg:] - labels[keep, 1:]) ** 2).mean()
    return ce + mse


def map_loss(net: Net, n_text: int, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the label map (shape and colour class per cell, the two weighted equally) predicted from the
    image tokens that the hooked block produced in the last forward pass. labels [B,2,G,G] with G = H / MAP_CELL."""
    p = net.transformer.config.patch_size
    k = p // MAP_CELL  # cells per token side
    B, _, G, _ = labels.shape
    g = G // k  # tokens per side
    feats = net.features[:, n_text:n_text + g * g]  # [B,N,D]: image tokens only
    out = net.map_head(feats).float().view(B, g, g, k, k, sum(MAP_CLASSES))  # [B,g,g,k,k,C]
    out = out.permute(0, 5, 1, 3, 2, 4).reshape(B, sum(MAP_CLASSES), G, G)  # [B,C,G,G] in cell order
    n_shape = MAP_CLASSES[0]
    return 0.5 * (F.cross_entropy(out[:, :n_shape], labels[:, 0]) + F.cross_entropy(out[:, n_shape:], labels[:, 1]))


def diffusion_loss(net: Net, prompts: list[str], target: torch.Tensor, source: torch.Tensor | None,
                   gen: torch.Generator, device: torch.device, t_mean: float = T_MEAN, t_std: float = T_STD,
                   min_t: float = MIN_T, aux: torch.Tensor | None = None, aux_weight: float = AUX_WEIGHT,
                   maps: torch.Tensor | None = None, map_weight: float = MAP_WEIGHT, fg: torch.Tensor | None = None,
                   object_weight: float = OBJECT_WEIGHT, blur_p: float = BLUR_P,
                   weight_source_objects: bool = False) -> torch.Tensor:
    """Mean squared velocity error of the x0 prediction for one group of examples (plus aux_weight times the
    auxiliary caption loss when `aux` labels are given and the net has the head, and map_weight times the label-map
    loss when `maps` are given and the net has that head). With object_weight > 0 the squared error is weighted per
    pixel by object_weight_map of `fg` (text-to-image: the objects' coverage) or, for conditioned examples without
    `fg`, of what the edit changes (edit_foreground; with weight_source_objects, also the source's objects). A
    self-conditioned transformer gets, on SELF_COND_P of the calls, its own detached prediction of the same x_t as
    x0_prev. With blur_p > 0 some high-noise inputs are made from a blurred x0 (blur_inputs); the target is always
    the crisp one."""
    B = target.shape[0]
    x0 = target.to(device)  # [B,3,H,W]
    eps = torch.randn(x0.shape, generator=gen).to(device)  # [B,3,H,W]
    t = sample_t(B, gen, t_mean, t_std).to(device)  # [B]
    tb = t[:, None, None, None]  # [B,1,1,1]
    x_t = (1.0 - tb) * blur_inputs(x0, t, gen, blur_p) + tb * eps  # [B,3,H,W]
    ids, mask = net.text_encoder.tokenize(prompts)  # [B,L] each
    pad = -ids.shape[1] % 8  # few distinct lengths keep the CPU kernels' caches warm
    ids, mask = F.pad(ids.to(device), (0, pad)), F.pad(mask.to(device), (0, pad))  # [B,L8], padding <pad> / False
    text = net.text_encoder(ids, mask)  # [B,L,dim]
    src = None if source is None else source.to(device)
    prev = None
    if getattr(net.transformer, "prev_in", None) is not None and float(torch.rand(1, generator=gen)) < SELF_COND_P:
        with torch.no_grad():
            prev = net.transformer(x_t, t, text, mask, src)  # [B,3,H,W], the model's own first guess
    x0_hat = net.transformer(x_t, t, text, mask, src, prev)
    weight = None
    if object_weight > 0 and (fg is not None or src is not None):
        if fg is None:
            fg = edit_foreground(x0, src, weight_source_objects)
        weight = object_weight_map(fg.to(device), object_weight)
    loss = velocity_loss(x0_hat, x0, t, min_t, weight)
    if aux is not None and aux_weight > 0 and net.aux is not None:
        loss = loss + aux_weight * aux_loss(net.aux, text, mask, aux.to(device))
    if maps is not None and map_weight > 0 and net.map_head is not None and net.features is not None:
        loss = loss + map_weight * map_loss(net, ids.shape[1], maps.to(device))
    net.features = None  # the graph it belongs to is done with; a copy of the net (EMA, export) must not hold it
    return loss


def compile_blocks(net: Net) -> None:
    """Compile each transformer block in place (`nn.Module.compile`), so parameter names, saved states and exported
    weights stay as they are. Blocks only: they hold nearly all the compute, and the whole forward (whose text length
    and source tokens vary) compiles far more slowly. Sequence lengths are marked dynamic up front."""
    for block in net.transformer.blocks:
        block.compile(dynamic=True)


def train_step(net: Net, opt: torch.optim.Optimizer, batch: Batch, gen: torch.Generator, device: torch.device,
               args: argparse.Namespace) -> torch.Tensor:
    """One optimizer step on `batch` (both groups, weighted by their sizes; bf16 autocast per `args.bf16`,
    gradients clipped to norm 1). Returns the loss, detached."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
        losses, weights = [], []
        if batch.gen_target.shape[0]:
            losses.append(diffusion_loss(net, batch.gen_prompts, batch.gen_target, None, gen, device,
                                         args.t_mean, args.t_std, args.min_t, batch.gen_aux, args.aux_weight,
                                         batch.gen_map, args.map_weight, batch.gen_fg, args.object_weight,
                                         args.blur_p))
            weights.append(batch.gen_target.shape[0])
        if batch.cond_target.shape[0]:
            losses.append(diffusion_loss(net, batch.cond_prompts, batch.cond_target, batch.cond_source, gen,
                                         device, args.t_mean, args.t_std, args.min_t,
                                         object_weight=args.object_weight, blur_p=args.blur_p,
                                         weight_source_objects=args.weight_source_objects))
            weights.append(batch.cond_target.shape[0])
        loss = sum(l * w for l, w in zip(losses, weights)) / sum(weights)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    return loss.detach()


def export_pipeline(net: Net, out: Path, info: dict, shift: float = SAMPLE_SHIFT) -> None:
    """Write the shippable pipeline folder (fp16 weights) atomically: tmp folder, then rename."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from webui.builtin.pipeline import EaselPipeline

    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # casting a copy to fp16 for saving is intended
    try:
        transformer = copy.deepcopy(net.transformer).to("cpu", torch.float16)
        text_encoder = copy.deepcopy(net.text_encoder).to("cpu", torch.float16)
    finally:
        diffusers_logging.set_verbosity(verbosity)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    pipe = EaselPipeline(transformer, text_encoder, scheduler, guidance_interval=list(GUIDANCE_INTERVAL),
                         plan_layout=True, redraw_objects=True)  # layout.py
    out = out.resolve()
    tmp = out.with_name("." + out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    for config in tmp.glob("*/config.json"):  # weights started from a folder remember its path; ship none
        data = json.loads(config.read_text())
        if data.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (tmp / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    old = out.with_name("." + out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


STATE_KEYS = ("net", "ema", "opt", "step", "elapsed_s", "hparams")


class StateError(ValueError):
    """The training state was not read; the message names the file and says why."""


def save_state(path: Path, payload: dict) -> None:
    """Write the training state atomically (a temporary file, then a rename). It holds state dicts, numbers,
    strings, lists and dicts only, which `load_state` reads back with PyTorch's weights-only unpickler."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_state(path: Path) -> dict:
    """The state `save_state` wrote, read with PyTorch's weights-only unpickler (`torch.load(weights_only=True)`),
    which rebuilds tensors and plain data and refuses every other object, so a state file cannot run code when a
    run resumes from it. Raises StateError naming the file when it is refused, unreadable or not a training state."""
    start_over = "delete it, or pass another --state-dir, to start over"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported (?:global: GLOBAL ([\w.]+)|operand \d+|class ([\w.]+))", str(exc))
        if found is None:
            raise StateError(f"{path}: not a readable training state; {start_over}") from None
        what = found.group(1) or found.group(2) or "an unsupported operation"
        raise StateError(f"{path}: refused. It holds Python objects other than tensors and plain data ({what}), "
                         f"which could run code when loaded, so it was not read; {start_over}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "no detail"
        raise StateError(f"{path}: not a readable training state ({type(exc).__name__}: {detail}); "
                         f"{start_over}") from None
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise StateError(f"{path}: not a training state of this trainer (no {', '.join(missing)}); {start_over}")
    return state


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m webui.builtin_lab.train", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "models" / "builtin" / "easel-shapes")
    p.add_argument("--state-dir", type=Path, default=Path("~/.cache/easel/train-builtin").expanduser())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hours", type=float, default=3.0, help="total training time, summed over resumes")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0 = no limit)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--bottleneck", type=int, default=96)
    p.add_argument("--text-dim", type=int, default=192)
    p.add_argument("--text-depth", type=int, default=2)
    p.add_argument("--source-residual", action=argparse.BooleanOptionalAction, default=True,
                   help="add the source image to the prediction when editing, so the network learns the change")
    p.add_argument("--pixel-decoder", type=int, default=0,
                   help="channels of a full-resolution convolutional refinement of the x0 prediction (0 = none; "
                        "an experiment, see models/builtin/README.md)")
    p.add_argument("--object-weight", type=float, default=OBJECT_WEIGHT,
                   help="extra loss weight on object pixels and edited pixels (0 = uniform)")
    p.add_argument("--weight-source-objects", action=argparse.BooleanOptionalAction, default=False,
                   help="with --object-weight, edits also weight every object of their source, not only what changes")
    p.add_argument("--self-cond", action=argparse.BooleanOptionalAction, default=SELF_COND,
                   help="self-conditioning: the model also reads its previous x0 prediction")
    p.add_argument("--blur-p", type=float, default=BLUR_P,
                   help="share of high-noise examples (t >= %.1f) whose noisy input is made from a blurred image "
                        "(0 = off)" % BLUR_MIN_T)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (0 = in-process)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast")
    p.add_argument("--compile", action="store_true",
                   help="compile the transformer blocks with torch.compile (needs a C++ compiler on the CPU; about "
                        "a minute to start, then faster steps: see benchmarks/train_builtin_step.py)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="what --hours counts: wall time, or this process's CPU time / --threads (fair on a "
                        "machine shared with other work)")
    p.add_argument("--save-minutes", type=float, default=5.0)
    p.add_argument("--export-minutes", type=float, default=10.0)
    p.add_argument("--t-mean", type=float, default=T_MEAN, help="mean of the logit-normal noise level")
    p.add_argument("--t-std", type=float, default=T_STD, help="spread of the logit-normal noise level")
    p.add_argument("--min-t", type=float, default=MIN_T,
                   help="smallest t the velocity loss divides by (bounds the weight of nearly clean samples)")
    p.add_argument("--sample-shift", type=float, default=SAMPLE_SHIFT,
                   help="shift of the exported scheduler (1 = uniform steps in t; larger spends more at high noise)")
    p.add_argument("--aux-weight", type=float, default=AUX_WEIGHT,
                   help="weight of the auxiliary caption loss on the text encoder's pooled features (0 = off)")
    p.add_argument("--map-weight", type=float, default=MAP_WEIGHT,
                   help="weight of the label-map loss on a middle block's image tokens (0 = off)")
    p.add_argument("--cooldown", type=float, default=0.2,
                   help="fraction of --hours at the end over which the learning rate falls linearly to 5%%")
    p.add_argument("--resume-from-weights", type=Path, default=None,
                   help="pipeline folder to start from (fresh optimizer) when the state dir has no state")
    args = p.parse_args(argv)
    args.state_dir = args.state_dir.expanduser()
    return args


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    state_path = args.state_dir / "state.pt"

    net = build_net(args)
    step, elapsed = 0, 0.0
    warm_from = 0  # the step the learning-rate warmup counts from (a fresh optimizer warms up again)
    if state_path.exists():
        try:
            state = load_state(state_path)
        except StateError as exc:
            logger.error("%s", exc)
            return 2
        arch = state["hparams"]
        for k in ("hidden", "depth", "heads", "patch", "bottleneck", "text_dim", "text_depth", "batch_size"):
            setattr(args, k.replace("-", "_"), arch[k])
        # a state saved before this option existed: the command line decides
        args.source_residual = arch.get("source_residual", args.source_residual)
        args.pixel_decoder = arch.get("pixel_decoder", 0)
        args.self_cond = arch.get("self_cond", False)
        if not any(k.startswith("map_head.") for k in state["net"]):  # a state saved before the label map existed
            args.map_weight = 0.0
        net = build_net(args)
        if not any(k.startswith("aux.") for k in state["net"]):  # a state saved before the auxiliary loss existed
            net.aux, args.aux_weight = None, 0.0
        net.load_state_dict(state["net"])
    elif args.resume_from_weights is not None:
        from webui.builtin.pipeline import EaselPipeline

        pipe = EaselPipeline.from_pretrained(str(args.resume_from_weights))
        config = pipe.transformer.config
        for k, name in (("hidden", "hidden_size"), ("depth", "depth"), ("heads", "num_heads"), ("patch", "patch_size"),
                        ("bottleneck", "bottleneck"), ("text_dim", "text_dim"), ("source_residual", "source_residual")):
            setattr(args, k, config[name])
        args.pixel_decoder = config.get("pixel_decoder", 0) or args.pixel_decoder  # the weights' own, if they have one
        args.self_cond = bool(config.get("self_condition", False)) or args.self_cond
        net = build_net(args)  # may add a pixel decoder or self-conditioning the weights lack: both start at zero
        missing, unexpected = net.transformer.load_state_dict(pipe.transformer.float().state_dict(), strict=False)
        if unexpected or any(not k.startswith(("decoder.", "prev_in.")) for k in missing):
            raise ValueError(f"{args.resume_from_weights} does not match: missing {missing}, unexpected {unexpected}")
        net.text_encoder = pipe.text_encoder.float()
        args.text_depth = pipe.text_encoder.config.depth
        info_path = args.resume_from_weights / "training.json"
        if info_path.exists():
            info = json.loads(info_path.read_text())
            step, elapsed = int(info.get("step", 0)), float(info.get("elapsed_s", 0.0))
        warm_from = step
        logger.info("starting from the weights in %s (step %d), fresh optimizer", args.resume_from_weights, step)
    hparams = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}  # as trained
    net.to(device)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0,
                            fused=device.type == "cuda" or None)  # one kernel for all parameters on a GPU
    ema_params, net_params = list(ema.parameters()), list(net.parameters())
    if args.compile:
        compile_blocks(net)
    if state_path.exists():
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["elapsed_s"]
        warm_from = state.get("warm_from", 0)
        logger.info("resumed from %s at step %d (%.0f s trained)", state_path, step, elapsed)
        del state
    n_transformer = sum(p.numel() for p in net.transformer.parameters())
    n_text = sum(p.numel() for p in net.text_encoder.parameters())
    n_params = n_transformer + n_text  # as exported
    logger.info("parameters: %.2fM exported (transformer %.2fM, text encoder %.2fM); training-only heads %.2fM",
                n_params / 1e6, n_transformer / 1e6, n_text / 1e6,
                (sum(p.numel() for p in net.parameters()) - n_params) / 1e6)

    args.state_dir.mkdir(parents=True, exist_ok=True)
    log_path = args.state_dir / "loss.csv"
    if not log_path.exists():
        log_path.write_text("step,elapsed_s,loss,lr\n")
    budget = args.hours * 3600.0
    stream = BatchStream(args.seed, step, args.batch_size)
    loader = iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=args.workers,
                                              prefetch_factor=4 if args.workers else None,
                                              persistent_workers=bool(args.workers)))
    last_save = last_export = time.monotonic()

    def clock() -> float:
        return time.process_time() / args.threads if args.clock == "cpu" else time.monotonic()

    stop_requested = []  # SIGTERM/SIGINT: finish the step, save, export, exit
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_requested.append(True))
    t_prev = clock()
    running, n_run = 0.0, 0
    last_avg: float | None = None  # mean loss of the last logged 50 steps
    bar = tqdm(initial=step, total=args.max_steps or None, dynamic_ncols=True, desc="train-builtin")

    def snapshot() -> dict:
        return {"step": step, "elapsed_s": round(elapsed, 1), "seed": args.seed,
                "loss": round(last_avg if last_avg is not None else running / max(n_run, 1), 5),
                "params": n_params, "hparams": hparams}

    while elapsed < budget and (not args.max_steps or step < args.max_steps) and not stop_requested:
        batch = next(loader)
        gen = torch.Generator().manual_seed(args.seed * 7_919 + step)
        lr = args.lr * min(1.0, (step - warm_from + 1) / args.warmup)
        if args.cooldown > 0 and not args.max_steps:
            lr *= max(0.05, min(1.0, (budget - elapsed) / (args.cooldown * budget)))
        for group in opt.param_groups:
            group["lr"] = lr
        loss = train_step(net, opt, batch, gen, device, args)
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():  # one fused update over all tensors (one kernel per group on a GPU)
            torch._foreach_lerp_(ema_params, net_params, 1.0 - decay)
        step += 1
        tick = clock()
        elapsed += tick - t_prev
        t_prev = tick
        now = time.monotonic()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise RuntimeError(f"loss became {value} at step {step}; lower --lr and resume")
        running, n_run = running + value, n_run + 1
        bar.update()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{running / n_run:.4f}", hours=f"{elapsed / 3600:.2f}")
        if step % 50 == 0:
            with log_path.open("a") as f:
                f.write(f"{step},{elapsed:.1f},{running / n_run:.5f},{lr:.2e}\n")
            last_avg, running, n_run = running / n_run, 0.0, 0
        if now - last_save > args.save_minutes * 60:
            save_state(state_path, {"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                                    "step": step, "elapsed_s": elapsed, "warm_from": warm_from, "hparams": hparams})
            last_save = now
        if now - last_export > args.export_minutes * 60:
            export_pipeline(ema, args.out, snapshot(), args.sample_shift)
            last_export = now
    bar.close()
    save_state(state_path, {"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                            "step": step, "elapsed_s": elapsed, "warm_from": warm_from, "hparams": hparams})
    export_pipeline(ema, args.out, snapshot(), args.sample_shift)
    logger.info("done: step %d, %.2f h trained; pipeline in %s", step, elapsed / 3600, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

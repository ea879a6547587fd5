"""LoRA switching and per-step cost, as ratios measured in one run.

    python benchmarks/lora.py [--runs 7] [--sizes 64 128] [--steps 8] [--rank 16] [--threads 1] [--sd1-width 160]

Prints, with medians over `--runs` repeats (the configurations are interleaved, so a noisy neighbour hits all of
them alike):
  - LoRA switch on a loaded model (A -> B through the model manager: with both kept loaded, the default, only
    the active adapter changes; loaded anew, B is read, A dropped and B added as named adapters; with hot-swap
    on, B is copied into A's slot) versus a cold load of the base checkpoint (a fresh manager loading the model
    folder, and for SD 1.x also the same weights as one .safetensors file; the files are in the OS page cache
    after the first run, so this is the fastest a cold load gets): target <= 0.1. Measured on an SD 1.x-layout pipeline (the real UNet's block structure and
    layer count, 768-wide cross-attention, channels `--sd1-width` x (1, 2, 4, 4); 160 = half SD 1.5's width,
    about a quarter of its parameters) with kohya LoRAs on every attention and feed-forward layer plus the text
    encoder, and on the built-in model, whose 30 MB cold load is nearly free;
  - time per denoising step on the built-in model with one unfused LoRA versus none (target <= 1.15), and fused
    (target <= 1.02), at each size in `--sizes` (the model makes (size/8)^2 image tokens).

The built-in model is a copy of models/builtin/easel-shapes (hidden 256, depth 8, about 7.5M transformer
parameters); its LoRAs are random, rank `--rank`, on every block's qkv, proj and both MLP layers.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, median, timed

SD1_ATTENTION = r"(attn[12]\.to_(q|k|v|out\.0)|ff\.net\.(0\.proj|2))$"


def make_sd1_layout(folder: Path, width: int) -> Path:
    """An SD 1.x-shaped pipeline with random weights: the real UNet block layout at `width` base channels."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.tiny_models import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer(folder / "_tok")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(width, 2 * width, 4 * width, 4 * width), cross_attention_dim=768,
                                attention_head_dim=8, layers_per_block=2, sample_size=64)
    vae = AutoencoderKL(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=2, num_attention_heads=12, max_position_embeddings=77,
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=EulerDiscreteScheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(folder))
    shutil.rmtree(folder / "_tok", ignore_errors=True)
    return folder


def make_sd1_lora(folder: Path, path: Path, rank: int, seed: int) -> Path:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    from tests.lora.lora_files import kohya_layout, random_lora, save

    unet = UNet2DConditionModel.from_pretrained(str(folder / "unet"))
    text = CLIPTextModel.from_pretrained(str(folder / "text_encoder"))
    unet_pairs = random_lora(unet, SD1_ATTENTION, rank=rank, seed=seed, scale=0.01)
    text_pairs = {f"text_model.{k}": v for k, v in
                  random_lora(text, r"(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])$", rank=rank, seed=seed).items()}
    return save(path, {**kohya_layout(unet_pairs, "lora_unet", rank / 2), **kohya_layout(text_pairs, "lora_te")},
                {"ss_base_model_version": "sd_v1"})


def switch_ratio(label: str, root: Path, manager_factory, names: dict[str, str], runs: int) -> None:
    """Median cold loads of the base checkpoint (`names`: how it is stored -> model name) vs median A<->B LoRA
    switches: named adapters with both kept loaded (the default), named adapters loaded anew each time (nothing
    kept), and hot-swap in place."""
    from webui.model_manager.manager import LoraOptions

    cold: dict[str, list[float]] = {how: [] for how in names}
    for _ in range(runs):
        for how, name in names.items():
            fresh = manager_factory()
            cold[how].append(timed(lambda: fresh.get(name, "txt2img")))
            del fresh
    name = next(iter(names.values()))
    results = {}
    for mode, options in (("named adapters, both kept loaded (default)", LoraOptions()),
                          ("named adapters, loaded anew each switch (keep_loaded=0)", LoraOptions(keep_loaded=0)),
                          ("hot-swap in place", LoraOptions(hotswap=True, max_rank=64))):
        m = manager_factory()
        m.lora_options = lambda options=options: options
        loaded = m.get(name, "txt2img")
        m.apply_loras(loaded, [("a", 1.0)])  # hashes computed and hot-swap slots made outside the timings
        m.apply_loras(loaded, [("b", 1.0)])
        switch = []
        for _ in range(runs):
            switch.append(timed(lambda: m.apply_loras(loaded, [("a", 1.0)])))
            switch.append(timed(lambda: m.apply_loras(loaded, [("b", 1.0)])))
        results[mode] = median(switch)
        del m, loaded
    print(label)
    for how, times in cold.items():
        print(f"  cold load of the base checkpoint ({how}): median {median(times) * 1000:.1f} ms")
    for mode, value in results.items():
        ratios = ", ".join(f"{value / median(times):.3f} vs {how}" for how, times in cold.items())
        print(f"  LoRA switch, {mode}: median {value * 1000:.1f} ms; ratio switch/cold {ratios} (target <= 0.1)")


def make_lora(transformer, path: Path, rank: int, seed: int) -> Path:
    import torch

    from webui.model_manager.identify import Arch
    from webui.model_manager.lora_writer import LoraMetadata, write_lora

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("blocks.") and name.endswith(
                ("qkv", "proj", "mlp.0", "mlp.2")):
            state[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=gen) * 0.01
            state[f"transformer.{name}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=gen) * 0.01
    return write_lora(path, state, LoraMetadata(Arch.EASEL, path.stem, rank=rank, alpha=rank, base_model="easel-shapes"))


def step_time(pipe, size: int, steps: int) -> float:
    """Seconds per denoising step: the whole call timed from the first step's end to the last's."""
    import torch

    marks: list[float] = []

    def on_step(pipe_, i, t, kwargs):
        marks.append(time.perf_counter())
        return {}

    pipe(prompt="a red circle and a blue square", height=size, width=size, num_inference_steps=steps,
         guidance_scale=4.0, generator=torch.Generator().manual_seed(0), output_type="latent",
         callback_on_step_end=on_step)
    return (marks[-1] - marks[0]) / (len(marks) - 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sd1-width", type=int, default=160)
    args = parser.parse_args()
    import torch

    from webui.model_manager.manager import LoraOptions, ModelManager

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="easel-lora-bench-"))
    builtin = root / "builtin"
    shutil.copytree(ROOT / "models" / "builtin" / "easel-shapes", builtin / "easel-shapes",
                    ignore=shutil.ignore_patterns("*.json.tmp", ".*"))
    loras = root / "Lora"

    def manager() -> ModelManager:
        return ModelManager(checkpoint_dirs=[], diffusers_dirs=[], vae_dirs=[], lora_dirs=[loras],
                            builtin_dirs=[builtin], device="cpu", hash_cache_path=root / "hashes.json")

    m = manager()
    loaded = m.get("easel-shapes", "txt2img")
    make_lora(loaded.pipe.transformer, loras / "a.safetensors", args.rank, seed=1)
    make_lora(loaded.pipe.transformer, loras / "b.safetensors", args.rank, seed=2)
    m.refresh_loras()
    m.apply_loras(loaded, [("a", 1.0)])  # hashes computed once, outside the timings

    print(f"machine: {machine()}")
    sd1_root = root / "sd1"
    make_sd1_layout(sd1_root / "diffusers" / "sd1-layout", args.sd1_width)
    for lora_name, seed in (("a", 1), ("b", 2)):
        make_sd1_lora(sd1_root / "diffusers" / "sd1-layout", sd1_root / "Lora" / f"{lora_name}.safetensors",
                      args.rank, seed)

    # The same weights as one AUTOMATIC1111-style .safetensors file, the form most checkpoints come in; the
    # folder's configs and tokenizer beside it as `<stem>.config/`, since its width is not a shipped config's.
    from tests.tiny_models import save_sd1_single_file

    single = sd1_root / "Stable-diffusion"
    single.mkdir(parents=True)
    save_sd1_single_file(sd1_root / "diffusers" / "sd1-layout", single / "sd1-file.safetensors")
    shutil.copytree(sd1_root / "diffusers" / "sd1-layout", single / "sd1-file.config",
                    ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))

    def sd1_manager() -> ModelManager:
        return ModelManager(checkpoint_dirs=[single], diffusers_dirs=[sd1_root / "diffusers"], vae_dirs=[],
                            lora_dirs=[sd1_root / "Lora"], builtin_dirs=[], device="cpu",
                            hash_cache_path=root / "hashes.json")

    sd1_params = sum(p.numel() for p in sd1_manager().get("sd1-layout", "txt2img").pipe.unet.parameters())
    switch_ratio(f"SD 1.x layout, UNet {sd1_params / 1e6:.0f}M parameters, kohya LoRA rank {args.rank} on "
                 "attention + feed-forward + text encoder", root, sd1_manager,
                 {"diffusers folder": "sd1-layout", "single .safetensors file": "sd1-file"}, args.runs)
    switch_ratio(f"built-in model, LoRA rank {args.rank} on qkv/proj/mlp of all blocks", root, manager,
                 {"diffusers folder": "easel-shapes"}, args.runs)

    pipe = loaded.pipe
    for size in args.sizes:
        times: dict[str, list[float]] = {"none": [], "unfused": [], "fused": []}
        step_time(pipe, size, 3)  # warm-up
        for _ in range(args.runs):
            m.lora_options = LoraOptions
            m.apply_loras(loaded, [])
            times["none"].append(step_time(pipe, size, args.steps))
            m.apply_loras(loaded, [("a", 1.0)])
            times["unfused"].append(step_time(pipe, size, args.steps))
            m.lora_options = lambda: LoraOptions(fuse=True)
            m.apply_loras(loaded, [("a", 1.0)])  # the same set again: fused
            assert m.lora_stack(loaded).fused is not None
            times["fused"].append(step_time(pipe, size, args.steps))
        none, unfused, fused = (median(times[k]) for k in ("none", "unfused", "fused"))
        print(f"{size}x{size} ({(size // 8) ** 2} image tokens), CFG batch 2, {args.steps} steps: per step none "
              f"{none * 1000:.1f} ms, one LoRA unfused {unfused * 1000:.1f} ms, fused {fused * 1000:.1f} ms")
        print(f"  ratio unfused/none: {unfused / none:.3f} (target <= 1.15); fused/none: {fused / none:.3f} "
              f"(target <= 1.02)")
    m.lora_options = LoraOptions
    m.apply_loras(loaded, [])
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""`python3 launch.py train config.yaml`: train a LoRA from a YAML config (docs/TRAINING.md), with a progress bar.

Options override single keys (`--steps 50`, `--output-name test`); `--fresh` ignores a saved state and starts
over. The config's paths follow the same rules as in the Train tab (webui/training/folders.py): relative to
`--data-dir` (Easel's data folder, where `models/` lives), the dataset inside its `data/`, the LoRA inside
`models/Lora`, the base model by name. An existing LoRA of the output name that has no resume state beside it is
kept and the run saves as `<name>-1` ...; `--replace` replaces it instead (the owner's explicit choice).
Ctrl+C stops after the current step and saves, so the same command resumes. Exit status: 0 done, 1 stopped or
failed, 2 a bad config or dataset (the message names the field or the file).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path



def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from webui.settings import ROOT

    p = argparse.ArgumentParser(prog="launch.py train", description="Train a LoRA from a YAML config.")
    p.add_argument("config", type=Path, help="YAML config (see docs/TRAINING.md)")
    p.add_argument("--data-dir", type=Path, default=ROOT,
                   help="folder relative paths start from (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--output-name", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--fresh", action="store_true", help="ignore a saved state and start from step 0")
    p.add_argument("--replace", action="store_true",
                   help="replace an existing <output_name>.safetensors that has no resume state beside it (without "
                        "this the run saves as <output_name>-1, -2, ...)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from webui.training.config import ConfigError, load_config
    from webui.training.dataset import DatasetError
    from webui.training.folders import TrainingFolders
    from webui.training.trainer import TrainEvent, TrainingError, train

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    overrides = {k: v for k, v in (("steps", args.steps), ("output_name", args.output_name),
                                   ("threads", args.threads), ("device", args.device)) if v is not None}
    folders = TrainingFolders.under(args.data_dir)
    try:
        config = load_config(args.config, overrides, folders=folders)
    except ConfigError as exc:
        print(f"launch.py train: bad config: {exc}", file=sys.stderr)
        return 2
    cancel = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: cancel.set())
    bar = tqdm(total=config.steps, dynamic_ncols=True, desc=config.output_name)

    def on_event(event: TrainEvent) -> None:
        if event.kind == "start":
            bar.n = event.step
            bar.write(event.message)
        elif event.kind == "step":
            bar.update(event.step - bar.n)
            if event.step % 10 == 0 and event.loss is not None:
                bar.set_postfix(loss=f"{event.loss:.4f}")
        elif event.kind == "sample":
            bar.write(f"step {event.step}: samples {', '.join(str(p) for p in event.samples)}")
        elif event.kind in ("save", "done", "cancelled"):
            bar.write(f"step {event.step}: saved {event.path}")

    try:
        result = train(config, on_event=on_event, cancel=cancel, search_dirs=list(folders.models),
                       resume=not args.fresh, replace=args.replace)
    except (ConfigError, DatasetError) as exc:
        bar.close()
        print(f"launch.py train: {exc}", file=sys.stderr)
        return 2
    except TrainingError as exc:
        bar.close()
        print(f"launch.py train: {exc}", file=sys.stderr)
        return 1
    bar.close()
    state = "stopped" if result.cancelled else "done"
    print(f"{state} at step {result.step}/{config.steps}: {result.path} "
          f"(wall {result.wall_s:.0f} s, CPU {result.cpu_s:.0f} s)")
    return 1 if result.cancelled else 0


if __name__ == "__main__":
    raise SystemExit(main())

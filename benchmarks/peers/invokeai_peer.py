"""InvokeAI as a peer in Easel's CPU benchmarks: the same model and request, served by InvokeAI's own server.

InvokeAI is installed from PyPI into its own virtual environment (never into Easel's), started offline on the CPU
with a root folder under a temporary directory, given a local diffusers folder through its model-install HTTP API,
and sent text-to-image graphs through its session queue. This module only needs the standard library, so Easel's
benchmarks import it from Easel's own environment and interleave its requests with their own.

Version used for the numbers in docs/BENCHMARKS.md: InvokeAI 6.14.2 (Python 3.11, torch 2.14.1, diffusers 0.40.0,
transformers 5.5.4 as its own pins resolve them; InvokeAI accepts torch >=2.7,<3, so no pin was needed).

Setup (once; about 6 GB of packages, mostly torch's CUDA wheels that InvokeAI pulls in but never uses on CPU):

    python benchmarks/peers/invokeai_peer.py setup                 # = the three commands below
    python3 -m venv /work/peers/invokeai-venv
    /work/peers/invokeai-venv/bin/pip install -U pip
    /work/peers/invokeai-venv/bin/pip install invokeai==6.14.2

What `InvokeAIPeer.start()` does:
  1. writes `<root>/invokeai.yaml`: `device: cpu`, `precision: float32`, `host: 127.0.0.1`, a free port,
     `patchmatch: false`, `hashing_algorithm: random` (skips hashing gigabytes of weights at install; no effect on
     generation), plain logs; everything else at InvokeAI's defaults (attention `auto`, which on a CPU is torch's
     scaled-dot-product attention, unsliced, when memory allows);
  2. runs `<venv>/bin/invokeai-web --root <root>` with HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1 (nothing is
     downloaded: InvokeAI starts with no models and fetches none on its own) and waits for `GET /api/v1/app/version`;
  3. installs the model folder in place: `POST /api/v2/models/install?source=<folder>&inplace=true` (body
     `{"name": ...}`), then polls `GET /api/v2/models/install/{id}` until `completed`; InvokeAI probes it as
     base `sd-1`, type `main`, format `diffusers`.

`generate()` enqueues one graph with `POST /api/v1/queue/default/enqueue_batch`: `main_model_loader` -> two
`compel` prompts (positive, negative) -> `noise` (seed, width, height; drawn on the CPU) -> `denoise_latents`
(steps, `cfg_scale`, scheduler `euler`, i.e. diffusers' EulerDiscreteScheduler) -> `l2i` (VAE decode, saved as a
PNG in InvokeAI's gallery). It polls `GET /api/v1/queue/default/b/{batch_id}/status` every 20 ms until the item
is done, then fetches the PNG with `GET /api/v1/images/i/{name}/full`. The wall time returned runs from the enqueue
request to the PNG's last byte. Every node is sent with `use_cache: false` by default, so each request encodes its
prompts and does all its work as a direct diffusers call does (InvokeAI's node cache would otherwise reuse the
prompt encodings of an identical earlier prompt); `use_cache=True` measures InvokeAI with its cache.

    from benchmarks.peers.invokeai_peer import InvokeAIPeer
    with InvokeAIPeer("/work/peers/sd15-random") as peer:      # start() ... stop()
        seconds = peer.generate("a cat", seed=1, width=256, height=256, steps=10, cfg=7.0)
        png = peer.last_image

    python benchmarks/peers/invokeai_peer.py bench /work/peers/sd15-random --runs 3 --size 256 --steps 10
    python benchmarks/peers/invokeai_peer.py compare /work/peers/sd15-random --runs 3   # vs diffusers, interleaved

`compare` needs diffusers and torch in the interpreter that runs it (Easel's environment); `setup` and `bench` need
only the standard library.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

INVOKEAI_VERSION = "6.14.2"
DEFAULT_VENV = Path(os.environ.get("EASEL_INVOKEAI_VENV", "/work/peers/invokeai-venv"))
POLL_S = 0.02


class InvokeAIError(RuntimeError):
    """InvokeAI could not be started, could not install the model, or failed a request."""


def setup(venv: Path = DEFAULT_VENV, version: str = INVOKEAI_VERSION, python: str = "python3",
          log: Path | None = None) -> Path:
    """Create `venv` and install InvokeAI `version` into it from the package index; return the venv."""
    venv = Path(venv)
    out = open(log, "a") if log else None
    try:
        if not (venv / "bin" / "python").exists():
            subprocess.run([python, "-m", "venv", str(venv)], check=True, stdout=out, stderr=out)
        pip = [str(venv / "bin" / "python"), "-m", "pip"]
        subprocess.run([*pip, "install", "-U", "pip"], check=True, stdout=out, stderr=out)
        subprocess.run([*pip, "install", f"invokeai=={version}"], check=True, stdout=out, stderr=out)
    finally:
        if out:
            out.close()
    if not (venv / "bin" / "invokeai-web").exists():
        raise InvokeAIError(f"{venv}/bin/invokeai-web missing after installing invokeai=={version}")
    return venv


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class InvokeAIPeer:
    """One InvokeAI server on loopback serving `model_dir` (a diffusers SD 1.x folder) on the CPU."""

    def __init__(self, model_dir: str | Path, root: str | Path | None = None, venv: str | Path = DEFAULT_VENV,
                 port: int | None = None, use_cache: bool = False, log_path: str | Path | None = None,
                 env: dict[str, str] | None = None):
        self.model_dir = Path(model_dir).resolve()
        self.venv = Path(venv)
        self.root = Path(root) if root else None
        self._own_root = root is None
        self.port = port
        self.use_cache = use_cache
        self.log_path = Path(log_path) if log_path else None
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.model: dict | None = None
        self.last_image: bytes | None = None
        self.version: str | None = None
        self.start_seconds: float | None = None
        self.install_seconds: float | None = None

    # ------------------------------------------------------------------------------------------------ HTTP
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _request(self, method: str, path: str, body=None, timeout: float = 600.0, raw: bool = False):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise InvokeAIError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        return payload if raw else json.loads(payload)

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 600.0) -> "InvokeAIPeer":
        """Start the server and install the model; returns self. Raises InvokeAIError with the log's tail."""
        exe = self.venv / "bin" / "invokeai-web"
        if not exe.exists():
            raise InvokeAIError(f"{exe} not found: run `python benchmarks/peers/invokeai_peer.py setup` first")
        if not (self.model_dir / "model_index.json").is_file():
            raise InvokeAIError(f"{self.model_dir} is not a diffusers folder (no model_index.json)")
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="invokeai-peer-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        (self.root / "invokeai.yaml").write_text(
            "schema_version: 4.0.3\n"
            f"host: 127.0.0.1\nport: {self.port}\n"
            "device: cpu\nprecision: float32\n"
            "patchmatch: false\nhashing_algorithm: random\nlog_format: plain\n")
        if self.log_path is None:
            self.log_path = self.root / "server.log"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                    "DO_NOT_TRACK": "1", "INVOKEAI_ROOT": str(self.root), **self.extra_env})
        begin = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([str(exe), "--root", str(self.root)], cwd=str(self.root), env=env,
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                message = f"invokeai-web exited with {self.proc.returncode}:\n{self._log_tail()}"
                self.stop()
                raise InvokeAIError(message)
            try:
                self.version = self._request("GET", "/api/v1/app/version", timeout=5)["version"]
                break
            except (OSError, InvokeAIError):
                if time.monotonic() > deadline:
                    message = f"invokeai-web did not answer within {timeout:.0f} s:\n{self._log_tail()}"
                    self.stop()
                    raise InvokeAIError(message)
                time.sleep(0.5)
        self.start_seconds = time.perf_counter() - begin
        begin = time.perf_counter()
        try:
            self.model = self._install(deadline)
        except BaseException:
            self.stop()
            raise
        self.install_seconds = time.perf_counter() - begin
        return self

    def _install(self, deadline: float) -> dict:
        for model in self._request("GET", "/api/v2/models/")["models"]:
            if Path(model.get("path", "")) == self.model_dir:
                return model  # a reused root that already has it
        query = urllib.parse.urlencode({"source": str(self.model_dir), "inplace": "true"})
        job = self._request("POST", f"/api/v2/models/install?{query}", {"name": self.model_dir.name})
        while job["status"] not in ("completed", "error", "cancelled"):
            if time.monotonic() > deadline:
                raise InvokeAIError(f"model install still {job['status']!r} at the deadline")
            time.sleep(0.2)
            job = self._request("GET", f"/api/v2/models/install/{job['id']}")
        if job["status"] != "completed":
            raise InvokeAIError(f"installing {self.model_dir} failed: {job.get('error_reason')}: {job.get('error')}")
        model = job["config_out"]
        if model.get("base") != "sd-1" or model.get("type") != "main":
            raise InvokeAIError(f"InvokeAI identified {self.model_dir} as {model.get('base')}/{model.get('type')},"
                                " not an SD 1.x main model")
        return model

    def stop(self) -> None:
        """Stop the server (SIGINT, then SIGKILL after 30 s) and remove a temporary root."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout=30)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=30)
        self.proc = None
        if self._own_root and self.root is not None and self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> "InvokeAIPeer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _log_tail(self, chars: int = 3000) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    # ----------------------------------------------------------------------------------------- generation
    def graph(self, prompt: str, seed: int, width: int, height: int, steps: int, cfg: float,
              negative: str = "", scheduler: str = "euler") -> dict:
        """The txt2img graph InvokeAI's linear UI builds for SD 1.x, without its metadata nodes."""
        if self.model is None:
            raise InvokeAIError("start() the peer before generating")
        if width % 8 or height % 8:
            raise ValueError(f"width and height must be multiples of 8, got {width}x{height}")
        ident = {k: self.model[k] for k in ("key", "hash", "name", "base", "type")}
        cache = self.use_cache
        nodes = {
            "model": {"type": "main_model_loader", "model": ident},
            "pos": {"type": "compel", "prompt": prompt},
            "neg": {"type": "compel", "prompt": negative},
            "noise": {"type": "noise", "seed": seed, "width": width, "height": height, "use_cpu": True},
            "denoise": {"type": "denoise_latents", "steps": steps, "cfg_scale": cfg, "scheduler": scheduler,
                        "denoising_start": 0.0, "denoising_end": 1.0},
            "l2i": {"type": "l2i", "fp32": True, "is_intermediate": False},
        }
        for node_id, node in nodes.items():
            node.update(id=node_id, use_cache=cache)
            node.setdefault("is_intermediate", True)
        links = [("model", "clip", "pos", "clip"), ("model", "clip", "neg", "clip"),
                 ("model", "unet", "denoise", "unet"), ("pos", "conditioning", "denoise", "positive_conditioning"),
                 ("neg", "conditioning", "denoise", "negative_conditioning"), ("noise", "noise", "denoise", "noise"),
                 ("denoise", "latents", "l2i", "latents"), ("model", "vae", "l2i", "vae")]
        edges = [{"source": {"node_id": a, "field": af}, "destination": {"node_id": b, "field": bf}}
                 for a, af, b, bf in links]
        return {"id": f"easel-peer-{seed}-{time.time_ns()}", "nodes": nodes, "edges": edges}

    def generate(self, prompt: str, seed: int, width: int, height: int, steps: int, cfg: float,
                 negative: str = "", scheduler: str = "euler", timeout: float = 1800.0) -> float:
        """Run one txt2img request; return its wall time in seconds. The PNG is left in `self.last_image`."""
        graph = self.graph(prompt, seed, width, height, steps, cfg, negative, scheduler)
        begin = time.perf_counter()
        result = self._request("POST", "/api/v1/queue/default/enqueue_batch",
                               {"batch": {"graph": graph, "runs": 1}, "prepend": False})
        batch_id, item_id = result["batch"]["batch_id"], result["item_ids"][0]
        deadline = time.monotonic() + timeout
        while True:
            status = self._request("GET", f"/api/v1/queue/default/b/{batch_id}/status")
            if status["completed"] + status["failed"] + status["canceled"] >= 1:
                break
            if self.proc is None or self.proc.poll() is not None:
                raise InvokeAIError(f"invokeai-web died during a request:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                raise InvokeAIError(f"request {item_id} not done after {timeout:.0f} s")
            time.sleep(POLL_S)
        item = self._request("GET", f"/api/v1/queue/default/i/{item_id}")
        if item["status"] != "completed":
            raise InvokeAIError(f"request {item_id} {item['status']}: {item.get('error_type')}: "
                                f"{item.get('error_message')}")
        session = item["session"]
        name = session["results"][session["source_prepared_mapping"]["l2i"][0]]["image"]["image_name"]
        self.last_image = self._request("GET", f"/api/v1/images/i/{urllib.parse.quote(name)}/full", raw=True)
        return time.perf_counter() - begin


# ---------------------------------------------------------------------------------------------------- CLI
def _diffusers_runner(model_dir: Path):
    """A function running the same request through diffusers' StableDiffusionPipeline (fp32, Euler) directly."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(model_dir), torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def run(prompt, seed, width, height, steps, cfg, negative=""):
        begin = time.perf_counter()
        generator = torch.Generator("cpu").manual_seed(seed)
        pipe(prompt, negative_prompt=negative, width=width, height=height, num_inference_steps=steps,
             guidance_scale=cfg, generator=generator)
        return time.perf_counter() - begin

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="InvokeAI as a CPU benchmark peer")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_setup = sub.add_parser("setup", help="create the venv and install InvokeAI from the package index")
    p_setup.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    p_setup.add_argument("--version", default=INVOKEAI_VERSION)
    p_setup.add_argument("--python", default="python3")
    for name in ("bench", "compare"):
        p = sub.add_parser(name, help="time InvokeAI" + (" and diffusers, interleaved" if name == "compare" else ""))
        p.add_argument("model_dir", type=Path)
        p.add_argument("--venv", type=Path, default=DEFAULT_VENV)
        p.add_argument("--runs", type=int, default=3, help="warm requests (after one warm-up request)")
        p.add_argument("--size", type=int, default=256)
        p.add_argument("--steps", type=int, default=10)
        p.add_argument("--cfg", type=float, default=7.0)
        p.add_argument("--prompt", default="a photograph of an astronaut riding a horse")
        p.add_argument("--negative", default="blurry")
        p.add_argument("--use-cache", action="store_true", help="let InvokeAI's node cache reuse prompt encodings")
        p.add_argument("--server-log", type=Path, help="keep InvokeAI's log here (default: inside its temp root)")
        p.add_argument("--warmup-steps", type=int, default=1,
                       help="steps of the untimed warm-up request each side runs first (loads the models)")
    sub.choices["compare"].add_argument(
        "--blocks", action="store_true",
        help="run all InvokeAI requests, stop it, then all diffusers requests: only one of the two models in RAM")
    args = parser.parse_args(argv)
    if args.cmd == "setup":
        print(setup(args.venv, args.version, args.python))
        return 0
    request = dict(prompt=args.prompt, width=args.size, height=args.size, steps=args.steps, cfg=args.cfg,
                   negative=args.negative)
    warmup = {**request, "steps": args.warmup_steps}
    times: dict[str, list[float]] = {}

    def rounds(runners: dict) -> None:
        for run in range(args.runs + 1):  # run 0 warms each side up (model load, first-call costs), untimed
            for name, fn in runners.items():
                seconds = fn(seed=1000 + run, **(request if run else warmup))
                label = f"run {run}" if run else f"warm-up ({args.warmup_steps} steps)"
                print(f"{name:9s} {label:20s} {seconds:8.2f} s", flush=True)
                if run:
                    times.setdefault(name, []).append(seconds)

    def diffusers_side() -> dict:
        begin = time.perf_counter()
        run = _diffusers_runner(args.model_dir)
        print(f"diffusers: loaded in {time.perf_counter() - begin:.1f} s", flush=True)
        return {"diffusers": run}

    runners = diffusers_side() if args.cmd == "compare" and not args.blocks else {}
    with InvokeAIPeer(args.model_dir, venv=args.venv, use_cache=args.use_cache, log_path=args.server_log) as peer:
        print(f"InvokeAI {peer.version}: started in {peer.start_seconds:.1f} s, model installed in "
              f"{peer.install_seconds:.1f} s", flush=True)
        rounds({**runners, "invokeai": peer.generate})
    if args.cmd == "compare" and args.blocks:
        rounds(diffusers_side())
    medians = {}
    for name, values in times.items():
        medians[name] = statistics.median(values)
        print(f"{name:9s} median {medians[name]:.2f} s of {len(values)} warm: " + ", ".join(f"{v:.2f}" for v in values))
    if len(medians) == 2:
        print(f"invokeai / diffusers (medians): {medians['invokeai'] / medians['diffusers']:.3f}")
    return 0

if __name__ == "__main__":
    sys.exit(main())

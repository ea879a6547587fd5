"""Keeping secrets and this machine's folder layout out of what Easel logs and answers.

`redact_argv` masks the values of secret flags in a command line: `--gradio-auth`, `--api-auth`, and any flag
whose name says auth, token, password or secret (except those naming a file or folder, such as
`--gradio-auth-path`), in both the `--flag value` and `--flag=value` forms, and the password of any
`scheme://user:password@host` URL. `redact_mapping` does the same for a settings dump, by key. Logs use these
two; nothing else should print a command line or a settings object.

`public_path` is what a client is told about a file Easel found: its path relative to the folder it was found
in (`sub/model.safetensors`), never the absolute path. `redact_paths` rewrites the absolute paths of known
folders inside a message the same way, for error messages that leave through the API. `answer_folders` lists
the folders of a `Settings` that both use.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    from webui.settings import Settings

MASK = "***"
SECRET_WORDS = ("auth", "token", "password", "passwd", "secret")
NOT_SECRET_SUFFIXES = ("path", "dir", "file", "folder")
_URL_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s:@]*):[^/\s@]*@")


def is_secret_name(name: str) -> bool:
    """True for a flag or settings key whose value is a secret (`--gradio-auth`, `api_auth`, `hf_token`), false
    for one that names where a secret is kept (`--gradio-auth-path`)."""
    words = [word for word in re.split(r"[-_\s]+", name.strip().lstrip("-").lower()) if word]
    if not words or words[-1] in NOT_SECRET_SUFFIXES:
        return False
    return any(secret in word for word in words for secret in SECRET_WORDS)


def redact_text(text: str) -> str:
    """`text` with the password of any `scheme://user:password@host` URL masked."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", text)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line with the values of secret flags masked (both `--flag value` and `--flag=value`)."""
    shown: list[str] = []
    mask_next = False
    for arg in argv:
        text = str(arg)
        if mask_next:
            shown.append(MASK)
            mask_next = False
            continue
        if text.startswith("-") and len(text) > 1:
            name, sep, _ = text.partition("=")
            if is_secret_name(name):
                if sep:
                    shown.append(f"{name}={MASK}")
                else:
                    shown.append(text)
                    mask_next = True
                continue
        shown.append(redact_text(text))
    return shown


def redact_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """A settings dump with every secret value masked (an unset one stays None, so the dump still says whether it
    is set)."""
    shown: dict[str, Any] = {}
    for key, value in values.items():
        if is_secret_name(str(key)) and value not in (None, "", [], ()):
            shown[key] = MASK
        elif isinstance(value, str):
            shown[key] = redact_text(value)
        else:
            shown[key] = value
    return shown


# Paths in answers -----------------------------------------------------------------------------------------------
def answer_folders(settings: "Settings") -> list[Path]:
    """The folders a path in an answer is shown relative to: every model folder, outputs, the data folder and the
    code folder."""
    from webui.settings import ROOT

    models = settings.models_dir
    folders = [*settings.checkpoint_dirs(), *settings.diffusers_dirs(), *settings.all_vae_dirs(),
               *settings.all_lora_dirs(), *settings.builtin_dirs(), *settings.all_embedding_dirs(),
               models / "ControlNet", *settings.controlnet_dirs, models / "ESRGAN", *settings.esrgan_dirs,
               models / "clipseg", models / "segmentation", models, settings.outputs_dir, settings.data_dir, ROOT]
    return [Path(folder) for folder in folders]


def _forms(folder: Path) -> list[Path]:
    """A folder as written and as resolved (links followed), without repeats."""
    written = Path(os.path.abspath(folder))
    resolved = Path(os.path.realpath(folder))
    return [written] if written == resolved else [written, resolved]


def public_path(path: str | os.PathLike[str] | None, folders: Iterable[Path]) -> str | None:
    """`path` relative to the innermost of `folders` holding it (POSIX separators); only its name when none does.
    A relative path (a Hugging Face repository id, say) is returned as it is."""
    if path is None:
        return None
    target = Path(path)
    if not target.is_absolute():
        return target.as_posix()
    best: Path | None = None
    for folder in folders:
        for form in _forms(folder):
            for candidate in {Path(os.path.abspath(target)), Path(os.path.realpath(target))}:
                try:
                    relative = candidate.relative_to(form)
                except ValueError:
                    continue
                if relative.parts and (best is None or len(relative.parts) < len(best.parts)):
                    best = relative
    return best.as_posix() if best is not None else target.name


def redact_paths(text: str, folders: Iterable[Path]) -> str:
    """`text` with each known folder's absolute path removed (what follows it stays, relative to it), the home
    folder written `~` and the temporary folder removed."""
    prefixes: dict[str, str] = {}
    for folder in folders:
        for form in _forms(folder):
            prefixes.setdefault(str(form), "")
    prefixes.setdefault(str(Path.home()), "~")
    prefixes.setdefault(os.path.realpath(tempfile.gettempdir()), "")
    prefixes.setdefault(tempfile.gettempdir(), "")
    for prefix in sorted(prefixes, key=len, reverse=True):  # the innermost folder first
        if len(prefix) <= 1:
            continue
        replacement = prefixes[prefix]
        text = text.replace(prefix + os.sep, f"{replacement}/" if replacement else "")
        whole = replacement or Path(prefix).name
        text = re.sub(re.escape(prefix) + r"(?=$|[\s'\"`),:;\]])", lambda _match: whole, text)
    return text

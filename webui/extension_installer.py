"""Installing, listing and enabling extensions: what the Extensions tab does, without any UI.

An extension is installed into `<data dir>/extensions/<name>` by cloning a git repository (`git clone
--depth 1`, with a time limit and no credential prompts) or by copying a local folder. The result must look
like an extension (an `extension.json` or an `extension.py`); otherwise it is removed again. Installing runs
someone else's code inside Easel, so it is refused while Easel is reachable from other machines (`--listen`,
`--share`) unless `--enable-insecure-extension-access` is given, as in AUTOMATIC1111. Enabling and disabling
edit `UserSettings.disabled_extensions`; both take effect when Easel restarts.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from webui.extensions import MANIFEST, LoadedExtension, Manifest, discover
from webui.settings import Settings, apply_changes

log = logging.getLogger(__name__)

GIT_TIMEOUT_S = 120.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_URL_SCHEMES = ("https://", "http://", "ssh://", "git://", "file://")
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:[\w./~-]+$")  # git@host:owner/repo.git


class ExtensionInstallError(RuntimeError):
    """Installing failed; the message says why and what to do."""


@dataclass(frozen=True)
class ExtensionStatus:
    """One extension as the Extensions tab shows it."""

    name: str
    folder: Path
    version: str
    description: str
    status: str  # "loaded", "disabled", "failed", "not loaded"
    error: str | None
    enabled: bool  # what the settings say for the next start


def install_blocked_reason(settings: Settings) -> str | None:
    """Why installing is refused now, or None when it is allowed."""
    if settings.enable_insecure_extension_access:
        return None
    reachable = [flag for flag, on in (("--listen", settings.listen), ("--share", settings.share)) if on]
    if not reachable:
        return None
    return (f"Installing extensions is turned off because Easel was started with {' and '.join(reachable)}, "
            "so people on other machines could install code that runs on this one. Restart without it, or add "
            "--enable-insecure-extension-access if you trust everyone who can reach this page.")


def install_root(settings: Settings) -> Path:
    return settings.data_dir / "extensions"


def check_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise ValueError(f"name: {name!r} is not a usable folder name (letters, digits, '.', '_', '-'; "
                         "not starting with '.', '_' or '-')")
    return name


def name_from_source(source: str) -> str:
    """The folder name a URL or path suggests: its last part without `.git`."""
    tail = source.strip().rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail[:-4] if tail.endswith(".git") else tail


def is_git_url(source: str) -> bool:
    return source.startswith(_URL_SCHEMES) or bool(_SCP_LIKE.match(source))


def install_from_git(settings: Settings, url: str, name: str | None = None,
                     timeout: float = GIT_TIMEOUT_S) -> Path:
    """Clone `url` (https, ssh, git, file URL, or a local repository path) into the extensions folder."""
    _check_allowed(settings)
    url = url.strip()
    if not url:
        raise ValueError("url: enter a git URL (https://..., git@host:owner/repo.git or file://...)")
    if url.startswith("-") or not (is_git_url(url) or Path(url).expanduser().is_dir()):
        raise ValueError(f"url: {url!r} is not a git URL Easel accepts (https://, ssh://, git://, file://, "
                         "git@host:path) or an existing local repository")
    if shutil.which("git") is None:
        raise ExtensionInstallError("git is not installed; install git, or install from a local folder")
    target, staging = _prepare(settings, name or name_from_source(url))
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": ""}
    command = ["git", "clone", "--depth", "1", "--quiet", "--", url, str(staging / "repo")]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                                   stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExtensionInstallError(f"git clone of {url} took longer than {timeout:.0f} s and was stopped") from None
    if completed.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        lines = [line for line in (completed.stderr or "").strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"git exited with status {completed.returncode}"
        raise ExtensionInstallError(f"git clone of {url} failed: {reason}")
    return _finish(staging / "repo", target, staging)


def install_from_folder(settings: Settings, source: str | Path, name: str | None = None) -> Path:
    """Copy a local extension folder into the extensions folder."""
    _check_allowed(settings)
    if not str(source).strip():
        raise ValueError("folder: enter the path of a folder holding an extension")
    folder = Path(str(source).strip()).expanduser()
    if not folder.is_dir():
        raise ValueError(f"folder: {folder} is not a folder")
    root = install_root(settings).resolve()
    if folder.resolve() == root or folder.resolve().is_relative_to(root):
        raise ValueError(f"folder: {folder} is already inside the extensions folder")
    target, staging = _prepare(settings, name or folder.resolve().name)
    try:
        shutil.copytree(folder, staging / "copy", symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExtensionInstallError(f"copying {folder} failed: {exc}") from None
    return _finish(staging / "copy", target, staging)


def _check_allowed(settings: Settings) -> None:
    reason = install_blocked_reason(settings)
    if reason:
        raise PermissionError(reason)


def _prepare(settings: Settings, name: str) -> tuple[Path, Path]:
    """The final folder (which must not exist yet) and a hidden staging folder beside it."""
    name = check_name(name)
    root = install_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    taken = {p.name.lower() for p in discover(root)} | {p.name.lower() for base in settings.extension_dirs()
                                                         for p in discover(base)}
    if target.exists() or name.lower() in taken:
        raise ValueError(f"name: an extension folder named {name!r} already exists; pick another name or remove it")
    staging = Path(tempfile.mkdtemp(prefix=".install-", dir=root))  # hidden: never loaded as an extension
    return target, staging


def _finish(source: Path, target: Path, staging: Path) -> Path:
    """Check the copied tree looks like an extension, then move it into place."""
    try:
        if not ((source / MANIFEST).is_file() or (source / "extension.py").is_file()):
            raise ExtensionInstallError(f"this is not an Easel extension: it has no {MANIFEST} or extension.py "
                                        "at its top level")
        try:
            Manifest.read(source)
        except (ValueError, TypeError) as exc:
            raise ExtensionInstallError(f"its {MANIFEST} is invalid: {exc}") from None
        os.replace(source, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("extension installed into %s", target)
    return target


def set_enabled(settings: Settings, enabled: dict[str, bool]) -> list[str]:
    """Record which extensions load at the next start (by name); returns the new disabled list."""
    disabled = [n for n in settings.user.disabled_extensions if enabled.get(n, False) is False]
    for name, on in enabled.items():
        if not on and name not in disabled:
            disabled.append(name)
    new, errors = apply_changes(settings, {"disabled_extensions": sorted(disabled)})
    if errors:
        raise errors[0]
    return new.disabled_extensions


def install(settings: Settings, source: str, name: str | None = None) -> Path:
    """Install from a git URL (https://, ssh://, git://, file://, git@host:path) or a local folder.

    A local folder that is a git repository is copied as it is (with its history), like any other folder.
    Raises PermissionError while installing is turned off (see `install_blocked_reason`), ValueError naming
    the bad input, or ExtensionInstallError when cloning or copying failed.
    """
    _check_allowed(settings)
    source = (source or "").strip()
    name = (name or "").strip() or None
    if not source:
        raise ValueError("source: enter a git URL or the path of a local folder")
    if is_git_url(source):
        return install_from_git(settings, source, name)
    if Path(source).expanduser().is_dir():
        return install_from_folder(settings, source, name)
    raise ValueError(f"source: {source!r} is neither a git URL (https://, ssh://, git://, file://, git@host:path) "
                     "nor an existing folder")


def statuses(settings: Settings, loaded: list[LoadedExtension],
             runtime_errors: dict[str, str] | None = None) -> list[ExtensionStatus]:
    """Every extension folder: what happened at start (with any hook failure since, from `runtime_errors`),
    plus those installed since (not loaded yet)."""
    disabled = set(settings.user.disabled_extensions)
    runtime_errors = runtime_errors or {}
    rows: list[ExtensionStatus] = []
    seen: set[Path] = set()
    for item in loaded:
        seen.add(item.folder.resolve())
        manifest = item.manifest
        status = "loaded" if item.loaded else "failed" if item.error else "disabled" if not item.enabled \
            else "not loaded"
        error = item.error
        if item.loaded and item.name in runtime_errors:
            status, error = "loaded, a hook failed", runtime_errors[item.name]
        rows.append(ExtensionStatus(item.name, item.folder, manifest.version if manifest else "",
                                    manifest.description if manifest else "", status, error,
                                    item.name not in disabled and item.folder.name not in disabled))
    for folder in [p for base in settings.extension_dirs() for p in discover(base)]:
        if folder.resolve() in seen:
            continue
        try:
            manifest = Manifest.read(folder)
            name, version, description, error = manifest.name, manifest.version, manifest.description, None
        except (ValueError, TypeError) as exc:
            name, version, description, error = folder.name, "", "", f"{MANIFEST} is invalid: {exc}"
        rows.append(ExtensionStatus(name, folder, version, description, "not loaded", error,
                                    name not in disabled and folder.name not in disabled))
    return rows

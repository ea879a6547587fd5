"""Easel's built-in scripts (the Script dropdown and the API's `script_name`): X/Y/Z plot, Prompt matrix, Prompts
from file or textbox, and on img2img only SD upscale and Loopback. Each is registered in every Easel's registry like
an extension's API script, under AUTOMATIC1111's name in lower case; a script returns a `ScriptJob`
(webui.engine.script_job), which runs its generations as one job and draws its grids.
"""
from __future__ import annotations

from typing import Any

from webui.extensions import Registry, ScriptContribution

BUILTIN = "builtin"
# lower-case name (the API's script_name) -> the title the UI shows
TITLES: dict[str, str] = {}


def register_builtin_scripts(easel: Any, registry: Registry) -> None:
    """Add the built-in scripts to `registry` (names clash with an extension's: the built-in one is kept)."""
    from webui.scripts import loopback, prompt_matrix, prompts_from_file, sd_upscale, xyz

    plot = xyz.Plot(easel)
    scripts = [(xyz.TITLE, lambda request, args: xyz.make_plot(plot, request, list(args)), xyz.ARG_LABELS),
               (prompt_matrix.TITLE, prompt_matrix.make_matrix, prompt_matrix.ARG_LABELS),
               (prompts_from_file.TITLE, prompts_from_file.make_prompts, prompts_from_file.ARG_LABELS)]
    img2img_only = [
        (sd_upscale.TITLE, lambda request, args: sd_upscale.make_sd_upscale(request, list(args),
                                                                           easel.engine.upscalers),
         sd_upscale.ARG_LABELS),
        (loopback.TITLE, loopback.make_loopback, loopback.ARG_LABELS)]
    choices = {xyz.TITLE: plot.choices}
    for modes, listed in ((("txt2img", "img2img"), scripts), (("img2img",), img2img_only)):
        for title, run, labels in listed:
            key = title.lower()
            TITLES[key] = title
            registry.scripts[key] = ScriptContribution(key, run, modes, tuple(labels), BUILTIN, choices.get(title))


def as_script_job(registry: Registry, name: str, request: Any, args: list[Any]) -> Any:
    """The job a script makes of `request`: its own `ScriptJob`, or the request(s) it returns run as one job.
    RequestError on `script_name` for an unknown script, on `script_args` when it refuses its arguments."""
    from webui.engine.script_job import ScriptJob
    from webui.requests import GenerationRequest, RequestError

    script = registry.scripts.get(name.strip().lower())
    if script is None:
        raise RequestError("script_name", f"no script named {name!r}")
    title = TITLES.get(script.name, script.name)
    try:
        made = script.run(request, list(args))
    except (ValueError, TypeError) as exc:
        raise RequestError("script_args", f"{title}: {exc}") from None
    if isinstance(made, ScriptJob):
        return made
    items = [request] if made is None else made if isinstance(made, list) else [made]
    if not items or not all(isinstance(item, GenerationRequest) for item in items):
        raise RequestError("script_name", f"the script {title!r} did not return a request or a list of requests")
    return ScriptJob(script=title, base=request, requests=tuple(items),
                     labels=tuple(f"request {i + 1}" for i in range(len(items))), mode=request.mode)

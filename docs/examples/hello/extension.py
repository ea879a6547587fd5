"""Hello: a small Easel extension that uses every part of the extension API once.

It adds a "Hello style" accordion to the txt2img tab whose text is appended to the prompt (API clients send
the same through `alwayson_scripts`), draws a thin frame around each finished image and notes it in the
infotext, counts the images it framed (shown in its own tab and at `GET /extensions/hello/stats`, together
with a user setting it reads), and offers an "Euler (trailing)" sampler, a "hello_invert" preprocessor and a
"style sweep" API script.
"""
from __future__ import annotations

from typing import Any

from PIL import ImageDraw, ImageOps

from webui.extension_api import ExtensionAPI, ExtensionInputs, Generated, GenerationRequest

FRAME_COLOR = (255, 128, 0)


def parse_args(raw: Any) -> dict[str, str]:
    """The per-request arguments: `["watercolor"]` from the API or the accordion, or the parsed dict."""
    if isinstance(raw, dict):
        return {"style": str(raw.get("style", ""))}
    if not isinstance(raw, list) or len(raw) > 1 or not all(isinstance(item, str) for item in raw):
        raise ValueError('args: expected a list holding one style text, e.g. ["watercolor"]')
    return {"style": raw[0].strip() if raw else ""}


def setup(api: ExtensionAPI) -> None:
    framed = {"images": 0}

    # Per-request arguments: alwayson_scripts {"hello": {"args": [...]}} and the accordion's values.
    api.add_request_args(parse_args)

    # Change the request before generation.
    def add_style(request: GenerationRequest) -> GenerationRequest | None:
        style = parse_args(request.extension_args.get("hello", {})).get("style", "")
        return request.replace(prompt=f"{request.prompt}, {style}") if style else None

    api.before_generate(add_style)

    # Post-process the images after generation.
    def frame(request: GenerationRequest, generated: list[Generated]) -> list[Generated]:
        for item in generated:
            item.image = item.image.convert("RGB")
            ImageDraw.Draw(item.image).rectangle((0, 0, item.image.width - 1, item.image.height - 1),
                                                 outline=FRAME_COLOR, width=1)
            item.extra["Hello"] = "framed"
            framed["images"] += 1
        return generated

    api.after_generate(frame)

    # An accordion in the txt2img tab whose value reaches `request.extension_args["hello"]`.
    def style_accordion() -> ExtensionInputs:
        import gradio as gr

        style = gr.Textbox(label="Style", placeholder="watercolor, ink sketch, ...", elem_id="hello_style")
        return ExtensionInputs(components=[style], to_args=lambda text: [text or ""])

    api.add_accordion("txt2img", "Hello style", style_accordion)

    # A tab of its own.
    def stats_tab() -> None:
        import gradio as gr

        gr.Markdown("Images framed by the **hello** extension since Easel started.")
        count = gr.Number(label="Images framed", value=0, interactive=False, elem_id="hello_count")
        gr.Button("Refresh", elem_id="hello_refresh").click(lambda: framed["images"], outputs=count)

    api.add_tab("Hello", stats_tab)

    # An HTTP route; it also reads a user setting.
    def stats() -> dict[str, Any]:
        return {"images": framed["images"], "save_images": api.setting("save_images")}

    api.add_route("/extensions/hello/stats", stats)

    # A sampler (a diffusers scheduler with other settings) and a preprocessor.
    api.add_sampler("Euler (trailing)", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"})
    api.add_preprocessor("hello_invert", lambda image, **options: ImageOps.invert(image.convert("RGB")))

    # An API script: script_name "style sweep", script_args [["red", "blue"]] makes one image per style.
    def sweep(request: GenerationRequest, args: list[Any]) -> list[GenerationRequest]:
        styles = args[0] if args else None
        if not isinstance(styles, list) or not styles or not all(isinstance(s, str) for s in styles):
            raise ValueError('args[0] must be a non-empty list of styles, e.g. ["red", "blue"]')
        return [request.replace(prompt=f"{request.prompt}, {style}") for style in styles]

    api.add_script("style sweep", sweep, modes=("txt2img",), args=("styles",))
    api.log.info("hello is ready")

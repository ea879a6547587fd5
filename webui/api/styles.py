"""Prompt styles route: `GET /sdapi/v1/prompt-styles`, the styles a request's `styles` may name.

Each style as AUTOMATIC1111 lists it, `{name, prompt, negative_prompt}`, in the order the style files give them
(`styles.csv` first; see `webui.styles`). A style file that cannot be read is logged; the styles read before its
bad line are still listed.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from webui.api.context import ApiContext
from webui.api.threads import API_LANE


def styles_router(api: ApiContext) -> APIRouter:
    """The prompt-styles route over `api`'s Easel."""
    store = api.easel.styles
    router = api.router()

    def listed() -> list[dict[str, Any]]:
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt} for s in store.styles()]

    @router.get("/prompt-styles")
    async def prompt_styles() -> list[dict[str, Any]]:
        return await API_LANE.run(listed)  # the files are read on a lane thread when they changed

    return router

"""What tab builders share while the UI is being assembled.

`UIContext` holds the running `Easel`, the controls at the top of the page (checkpoint, VAE), the `gr.Tabs`
container and the generation tabs built so far, so one tab can send images and parameters to another. Wiring
that needs every tab to exist (PNG Info's "Send to" buttons, the checkpoint dropdown updating each tab's
samplers) is registered with `after_build` and run once all tabs are built.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from webui.requests import GenerationRequest, Limits
from webui.ui.controls import ControlSet

if TYPE_CHECKING:
    from PIL import Image

    from webui.app import Easel


@dataclass
class GenerationTab:
    """A tab that generates images: its controls and where received images go."""

    mode: str  # "txt2img", "img2img", "inpaint": also the tab id
    request_cls: type[GenerationRequest]
    controls: ControlSet
    image_input: Any = None  # the component a sent image lands in (None for txt2img)
    receive_image: Callable[["Image.Image"], Any] | None = None  # image → value for image_input
    reveal: dict[str, Any] = field(default_factory=dict)  # field name → accordion to open when it is set
    styles: Any = None  # its prompt style components (webui.ui.styles.StyleWidgets)
    detail: dict[str, Any] = field(default_factory=dict)  # the Detail fixer accordion's components by name
    # field name → the accordion holding it, shown only for families that use the field (Easel.hidden_fields)
    family_panels: dict[str, Any] = field(default_factory=dict)


@dataclass
class UIContext:
    easel: "Easel"
    tabs: Any = None  # gr.Tabs
    checkpoint: Any = None  # gr.Dropdown at the top
    sized_for: Any = None  # gr.State: the checkpoint whose defaults (size, CFG) the controls were last set for
    vae: Any = None
    generation: dict[str, GenerationTab] = field(default_factory=dict)
    gan_only: list[Any] = field(default_factory=list)  # shown for StyleGAN checkpoints only (the Seed walk accordion)
    segment_image: Any = None  # the Segment tab's image input, when that tab is built ("Send to Segment")
    extras_image: Any = None  # the Extras tab's image input, when that tab is built ("Send to extras")
    _deferred: list[Callable[[], None]] = field(default_factory=list)

    @property
    def limits(self) -> Limits:
        return self.easel.settings.user.limits()

    def register(self, tab: GenerationTab) -> GenerationTab:
        if tab.mode in self.generation:
            raise ValueError(f"a generation tab {tab.mode!r} is already registered")
        self.generation[tab.mode] = tab
        return tab

    def after_build(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Run `fn` inside the Blocks once every tab exists."""
        self._deferred.append(fn)
        return fn

    def finish(self) -> None:
        for fn in self._deferred:
            fn()
        self._deferred.clear()

"""The Extensions tab: what is installed and how it went, enable/disable, and installing new extensions.

The table lists every extension folder with its version, status (loaded, disabled, failed, not loaded yet),
description and the error that stopped it (or that one of its hooks raised since). The checkboxes say which
extensions load at the next start; Apply stores them in the settings (`disabled_extensions`), and "Apply and
restart" also restarts Easel with the same command line (when it was started by `launch.py`, which offers
`easel.extras["restart"]`) once no job is running or waiting; the page reloads when Easel is back. Installing
takes a git URL or a local folder and puts the extension into `<data dir>/extensions`; it runs someone else's
code inside Easel, so the form says so, and it is turned off while Easel is reachable from other machines
(`--listen`, `--share`) unless `--enable-insecure-extension-access` was given. Installing, Apply and "Apply
and restart" also need this process's page token (`Easel.page_token`), which the page carries in a hidden
field: a request forged by another site, which cannot read the page, is refused even without a login.
Everything it shows comes from the `Easel` object when the tab is opened or a button is pressed; nothing is read
while the UI is built.
"""
from __future__ import annotations

import html
import logging
import threading
from typing import Any

import gradio as gr

from webui.ui.bridge import guard
from webui.ui.context import UIContext

HEADERS = ["Extension", "Status", "Error", "Version", "Loads at next start", "Description", "Folder"]
COLUMN_WIDTHS = ["13%", "10%", "27%", "8%", "9%", "23%", "10%"]
TRUST_TITLE = "Only install extensions you trust."
TRUST_WARNING = (
    "An extension is Python code that runs inside Easel with your user's rights: it can read, change and "
    "delete your files, reach the network and see every prompt and image. Easel does not check or sandbox it. "
    "Read its source, or install only from authors you trust."
)
RESTART_NOTE = "Changes take effect when Easel is restarted."
RESTART_DELAY_S = 1.0  # lets the answer reach the browser before the process is replaced
# Run in the browser after "Apply and restart": wait for the old server to go, then reload once Easel answers.
RELOAD_JS = """() => {
  const poll = () => fetch(window.location.href, {cache: "no-store"})
    .then((r) => { if (r.ok) { window.location.reload(); } else { setTimeout(poll, 1000); } })
    .catch(() => setTimeout(poll, 1000));
  setTimeout(poll, 4000);
}"""

log = logging.getLogger(__name__)


def extension_rows(easel: Any) -> list[list[str]]:
    """One table row per extension folder."""
    rows = []
    for item in easel.extension_statuses():
        rows.append([item.name, item.status, item.error or "", item.version, "yes" if item.enabled else "no",
                     item.description, str(item.folder)])
    return rows


def enabled_choices(easel: Any) -> tuple[list[str], list[str]]:
    """(every extension name, those enabled for the next start), for the checkboxes."""
    found = easel.extension_statuses()
    return [item.name for item in found], [item.name for item in found if item.enabled]


def apply_enabled(easel: Any, checked: list[str] | None) -> str:
    """Store which extensions load at the next start; returns the message shown under the button."""
    names, _ = enabled_choices(easel)
    checked = list(checked or [])
    unknown = [name for name in checked if name not in names]
    if unknown:
        raise ValueError(f"disabled_extensions: no extension named {', '.join(map(repr, unknown))} is installed")
    disabled = easel.set_extensions_enabled({name: name in checked for name in names})
    summary = f"disabled: {', '.join(disabled)}" if disabled else "every extension is enabled"
    return f"Saved ({summary}). {RESTART_NOTE}"


def schedule_restart(easel: Any, delay: float = RESTART_DELAY_S) -> threading.Timer:
    """Restart Easel after `delay` seconds; ValueError when it cannot restart itself or a job would be lost."""
    restart = easel.extras.get("restart")
    if restart is None:
        raise ValueError("restart: this Easel was not started by launch.py, so it cannot restart itself; the "
                         "changes are saved, restart it by hand")
    worker = easel.engine.worker
    if worker.current is not None or worker.queue_length():
        raise ValueError("restart: a job is running or waiting; the changes are saved, restart when it has "
                         "finished")
    log.info("restart requested from the Extensions tab")
    timer = threading.Timer(delay, restart)
    timer.daemon = True
    timer.start()
    return timer


def install(easel: Any, source: str | None, name: str | None) -> str:
    """Install from a git URL or a local folder; returns the message shown. Errors become ValueErrors naming
    what to fix, so the UI shows them as they are."""
    blocked = easel.extension_install_blocked()
    if blocked:
        raise ValueError(f"source: {blocked}")
    try:
        folder = easel.install_extension(source or "", name or None)
    except (PermissionError, RuntimeError) as exc:  # turned off, or git / copying failed
        raise ValueError(f"source: {exc}") from None
    return f"Installed into `{folder}`. Restart Easel to load it."


def install_status(easel: Any) -> tuple[str, bool]:
    """(the note above the install form, whether installing is possible now)."""
    blocked = easel.extension_install_blocked()
    if blocked:
        return f'<div class="easel-warning" id="extensions_blocked">{html.escape(blocked)}</div>', False
    return "", True


def build(ui: UIContext) -> None:
    easel = ui.easel
    with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions") as tab:
        token = gr.Textbox(easel.page_token(), visible="hidden", label="Page token", interactive=False,
                           elem_id="extensions_token")
        with gr.Tab("Installed", id="extensions_installed"):
            table = gr.Dataframe(headers=HEADERS, datatype=["str"] * len(HEADERS), interactive=False,
                                 label="Extensions", elem_id="extensions_table", wrap=True,
                                 column_widths=COLUMN_WIDTHS)
            enabled = gr.CheckboxGroup(choices=[], value=[], label="Load at next start",
                                       elem_id="extensions_enabled")
            with gr.Row():
                apply = gr.Button("Apply", variant="primary", elem_id="extensions_apply", scale=0, min_width=120)
                apply_restart = gr.Button("Apply and restart", elem_id="extensions_apply_restart", scale=0,
                                          min_width=180)
                check = gr.Button("Rescan", elem_id="extensions_rescan", scale=0, min_width=120)
                status = gr.Markdown(RESTART_NOTE, elem_id="extensions_status")
        with gr.Tab("Install", id="extensions_install"):
            gr.HTML(f'<div class="easel-warning"><strong>{TRUST_TITLE}</strong> {html.escape(TRUST_WARNING)}</div>',
                    elem_id="extensions_trust_warning", padding=False)
            blocked = gr.HTML("", elem_id="extensions_install_note", padding=False)
            with gr.Row(equal_height=False):
                source = gr.Textbox(label="Git URL or local folder", elem_id="extensions_source", scale=4,
                                    placeholder="https://github.com/owner/extension.git or /path/to/extension")
                name = gr.Textbox(label="Folder name (optional)", elem_id="extensions_name", scale=2,
                                  placeholder="from the URL or folder")
            install_button = gr.Button("Install", variant="primary", elem_id="extensions_install_button",
                                       scale=0, min_width=120)
            installed = gr.Markdown("", elem_id="extensions_install_status")

    def snapshot() -> tuple[Any, Any]:
        names, on = enabled_choices(easel)
        return extension_rows(easel), gr.CheckboxGroup(choices=names, value=on)

    @guard
    def on_show() -> tuple[Any, ...]:
        note, allowed = install_status(easel)
        return (*snapshot(), note, gr.Textbox(interactive=allowed), gr.Textbox(interactive=allowed),
                gr.Button(interactive=allowed))

    @guard
    def on_apply(checked: list[str] | None, page_token: str | None) -> tuple[Any, ...]:
        easel.check_page_token(page_token)
        message = apply_enabled(easel, checked)
        return (*snapshot(), message)

    @guard
    def on_apply_restart(checked: list[str] | None, page_token: str | None) -> tuple[Any, ...]:
        easel.check_page_token(page_token)
        apply_enabled(easel, checked)
        schedule_restart(easel)
        return (*snapshot(), "Restarting Easel; this page reloads when it is back.")

    @guard
    def on_install(where: str | None, folder_name: str | None, page_token: str | None) -> tuple[Any, ...]:
        easel.check_page_token(page_token)
        message = install(easel, where, folder_name)
        gr.Info(message.replace("`", ""))
        return (*snapshot(), message, "")

    shown = [table, enabled, blocked, source, name, install_button]
    tab.select(on_show, inputs=None, outputs=shown, show_progress="hidden")
    check.click(on_show, inputs=None, outputs=shown, show_progress="hidden")
    apply.click(on_apply, inputs=[enabled, token], outputs=[table, enabled, status], show_progress="hidden")
    apply_restart.click(on_apply_restart, inputs=[enabled, token], outputs=[table, enabled, status],
                        show_progress="hidden").success(None, js=RELOAD_JS)
    install_button.click(on_install, inputs=[source, name, token], outputs=[table, enabled, installed, source])

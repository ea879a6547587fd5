() => {
  // Ctrl+Enter (Cmd+Enter on macOS) presses Generate on the visible generation tab.
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
    const buttons = Array.from(document.querySelectorAll("button[id$='_generate']"));
    const visible = buttons.find((button) => button.offsetParent !== null && !button.disabled);
    if (!visible) return;
    event.preventDefault();
    // Let a textbox that was just typed in publish its value before the click reads it.
    setTimeout(() => visible.click(), 50);
  });
}

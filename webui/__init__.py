"""Easel: a local-first web UI for generating and editing images.

Importing this package does no work: no model is loaded, no thread started, no flag parsed.
`webui.app.main()` builds everything.
"""
__version__ = "0.1.0"

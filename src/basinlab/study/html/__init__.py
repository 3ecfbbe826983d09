"""Self-contained HTML views (inline CSS, JS and SVG; no network): the audit page (:mod:`.audit_page`) and the
token shading shared with the sweep report (:mod:`.shading`). Templates are Jinja2 files in ``templates/``."""

from __future__ import annotations

from pathlib import Path

TEMPLATES = Path(__file__).parent / "templates"


def environment():
    """The Jinja2 environment of the templates (autoescape on: every value put into HTML is escaped)."""
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)

"""A self-contained HTML page from figures and tables (PNGs embedded as base64)."""

from __future__ import annotations

import base64
import html

import pandas as pd

STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border: 1px solid #ccc; padding: 2px 6px; }
img { max-width: 100%; }
"""


def page(title: str, sections: list[tuple[str, list[str]]]) -> str:
    """``sections``: (heading, html fragments)."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, fragments in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>")
        body.extend(fragments)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )


def image_tag(png: bytes, alt: str) -> str:
    """A PNG inline in HTML."""
    encoded = base64.b64encode(png).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{encoded}'>"


def table_tag(table: pd.DataFrame, empty: str = "none found") -> str:
    """A DataFrame as an HTML table."""
    if table.empty:
        return f"<p><em>{html.escape(empty)}</em></p>"
    return table.to_html(index=False, escape=True, border=0)


def text_tag(text: str) -> str:
    """Escaped text in HTML."""
    return f"<p>{html.escape(text)}</p>"

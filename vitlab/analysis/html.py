"""A self-contained HTML page: inline CSS, PNGs as data URIs, no network needed to view it.

A tiny inline script records script errors and images that fail to decode on ``<body>``
(``data-js-errors``, ``data-broken-images``, ``data-ready``), so a headless browser's dumped DOM
tells a test whether the page rendered cleanly.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#c9d1e0;font-size:13px}nav{padding:10px 32px;background:#e8ebf1;font-size:13px}
nav a{margin-right:14px;color:#2a4d9b;text-decoration:none}main{padding:8px 32px 40px;max-width:1400px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);margin:18px 0;padding:14px 20px}
section h2{margin:0 0 6px;font-size:18px}p.explain{margin:0 0 10px;color:#4a5468;font-size:13px}
img{max-width:100%;height:auto;image-rendering:auto}table{border-collapse:collapse;font-size:13px}
td,th{border-bottom:1px solid #e3e6ec;padding:4px 10px;text-align:left}p.note{color:#8a5a00;font-size:13px}
"""

_SCRIPT = """
(function(){var errors=0,broken=0;
function mark(){if(document.body){document.body.dataset.jsErrors=String(errors);
document.body.dataset.brokenImages=String(broken);}}
window.addEventListener('error',function(e){if(e.target&&e.target.tagName==='IMG'){broken++;}else{errors++;}mark();},true);
window.addEventListener('load',function(){var imgs=document.images;for(var i=0;i<imgs.length;i++){
if(!imgs[i].complete||imgs[i].naturalWidth===0){broken++;}}mark();
document.body.dataset.images=String(imgs.length);document.body.dataset.ready='yes';
console.log('vitlab report rendered: '+imgs.length+' images, '+errors+' script errors');});
})();
"""


@dataclass
class Section:
    """One part of the page: a heading, a one-line reading guide, then images and/or HTML."""

    id: str
    title: str
    explain: str
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (alt text, PNG bytes)
    html: str = ""  # trusted markup built by this package (tables), placed after the images
    notes: list[str] = field(default_factory=list)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def table(rows: list[tuple[str, str]]) -> str:
    """Two-column key / value table, escaped."""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def render(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole page as one string."""
    esc = html.escape
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    parts = []
    for s in sections:
        imgs = "".join(f'<figure><img alt="{esc(alt)}" src="{data_uri(png)}"></figure>' for alt, png in s.images)
        notes = "".join(f'<p class="note">{esc(n)}</p>' for n in s.notes)
        parts.append(f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2><p class="explain">{esc(s.explain)}</p>'
                     f"{imgs}{s.html}{notes}</section>")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head>"
            f'<body><header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>'
            f"<nav>{nav}</nav><main>{''.join(parts)}</main></body></html>")

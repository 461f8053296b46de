"""Notebook display for the Python API: the attention explorer (`api.explore`) and the table of a hypothesis test
(`api.HypothesisTest`), as self-contained HTML: inline styles and script, no network, the same bytes for the same
inputs. Without a script (a notebook viewed where scripts do not run) the explorer still shows its per-head table.
"""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .detectors import SKIP

MAX_OFFSET = 8  # offsets 0..MAX_OFFSET back compared for a head's strongest offset

STYLE = """
.rgx{font:13px/1.4 system-ui,sans-serif;color:#222;max-width:100%}
.rgx table{border-collapse:collapse;margin:6px 0}
.rgx td,.rgx th{border:1px solid #ddd;padding:2px 6px;text-align:right}
.rgx th{background:#f4f4f4}
.rgx .heads button{font:12px monospace;margin:1px;padding:2px 5px;border:1px solid #bbb;background:#fff;cursor:pointer}
.rgx .heads button.on{background:#1f5fa8;color:#fff}
.rgx .chars{display:flex;flex-wrap:wrap;margin:6px 0;font:16px monospace}
.rgx .chars span{padding:2px 1px;margin:1px 0;min-width:0.7em;text-align:center;cursor:default}
.rgx .chars span.q{outline:2px solid #c0392b}
.rgx .note{color:#666;font-size:12px}
"""

SCRIPT = """
(function(){
  var root=document.getElementById(%(id)s); if(!root) return;
  var d=JSON.parse(root.querySelector('script[type="application/json"]').textContent);
  var head=0, pinned=-1, chars=root.querySelectorAll('.chars span'), buttons=root.querySelectorAll('.heads button');
  var label=root.querySelector('.which');
  function paint(q){
    for(var j=0;j<chars.length;j++){chars[j].className='';chars[j].style.background='';chars[j].title='';}
    if(q<0){label.textContent='point at a character to see what '+d.names[head]+' reads from it';return;}
    var row=d.attn[head][q];
    for(var j=0;j<=q;j++){var a=row[j]/1000;chars[j].style.background='rgba(31,95,168,'+a+')';
      chars[j].title=(a*100).toFixed(1)+'%%';}
    chars[q].className='q';
    label.textContent=d.names[head]+', query '+(q+1)+' ('+JSON.stringify(d.text[q])+
      '): shading = attention on each earlier character';
  }
  for(var b=0;b<buttons.length;b++){(function(k){buttons[k].onclick=function(){
    buttons[head].className='';head=k;buttons[k].className='on';paint(pinned);};})(b);}
  for(var i=0;i<chars.length;i++){(function(k){
    chars[k].onmouseenter=function(){paint(k);};
    chars[k].onclick=function(){pinned=(pinned===k?-1:k);paint(pinned);};})(i);}
  root.querySelector('.chars').onmouseleave=function(){paint(pinned);};
  buttons[0].className='on'; paint(-1);
})();
"""


def shown(c: str) -> str:
    """A character as the explorer shows it: spaces, line breaks and tabs as visible symbols."""
    return {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5"}.get(c, c)


def strongest_offsets(attn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per head of attn (L, H, N, N): the offset 0..MAX_OFFSET back with the most mean attention over the queries
    that have it (queries from the ninth character on when the text is longer than 8, as the report skips them),
    and that mean: two (L, H) arrays."""
    N = attn.shape[-1]
    first = SKIP if N > SKIP else 0
    offsets = range(min(MAX_OFFSET, N - 1) + 1)
    mass = np.stack([np.diagonal(attn, offset=-k, axis1=-2, axis2=-1)[..., max(first - k, 0):].mean(-1)
                     for k in offsets], -1)  # (L, H, K)
    return mass.argmax(-1), mass.max(-1)


@dataclass(frozen=True)
class Explorer:
    """Attention of every head on one text, displayed inline by Jupyter (`_repr_html_`) or saved (`save`)."""

    text: str
    attention: np.ndarray  # (L, H, N, N)
    logit_attribution: np.ndarray | None  # (L, H, N - 1) or None (no residual connections)
    model_name: str

    def _repr_html_(self) -> str:
        L, H, N, _ = self.attention.shape
        names = [f"L{l}H{h}" for l in range(L) for h in range(H)]
        rows = [[[int(round(float(v) * 1000)) for v in self.attention[l, h, i, :i + 1]] for i in range(N)]
                for l in range(L) for h in range(H)]
        data = json.dumps({"names": names, "text": list(self.text), "attn": rows}, ensure_ascii=True,
                          separators=(",", ":")).replace("</", "<\\/")
        uid = "rgx-" + hashlib.sha256(f"{self.model_name}\0{self.text}\0{data}".encode()).hexdigest()[:12]
        best, mass = strongest_offsets(self.attention)
        dla = None if self.logit_attribution is None else self.logit_attribution.mean(-1)
        head_rows = "".join(
            f"<tr><th>L{l}H{h}</th><td>{best[l, h]}</td><td>{mass[l, h]:.2f}</td>"
            + (f"<td>{dla[l, h]:+.2f}</td>" if dla is not None else "") + "</tr>"
            for l in range(L) for h in range(H))
        dla_head = "<th>mean direct logit to the next character</th>" if dla is not None else ""
        buttons = "".join(f"<button type='button'>{n}</button>" for n in names)
        chars = "".join(f"<span>{html.escape(shown(c))}</span>" for c in self.text)
        return (f"<div class='rgx' id='{uid}'><style>{STYLE}</style>"
                f"<div><b>{html.escape(self.model_name)}</b>: {L} layers x {H} heads, {N} characters</div>"
                f"<div class='heads'>{buttons}</div><div class='chars' dir='auto'>{chars}</div>"
                f"<div class='which note'>(the interactive view needs scripts; the table below does not)</div>"
                f"<table><tr><th>head</th><th>strongest offset back</th><th>its mean attention</th>{dla_head}</tr>"
                f"{head_rows}</table>"
                f"<script type='application/json'>{data}</script>"
                f"<script>{SCRIPT % {'id': json.dumps(uid)}}</script></div>")

    def save(self, path: str | Path) -> Path:
        """Write the explorer as a standalone HTML page; returns the path."""
        path = Path(path)
        path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.model_name)}"
                        f"</title></head><body>{self._repr_html_()}</body></html>", encoding="utf-8")
        return path


def _number(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def test_table(result) -> str:
    """An `api.HypothesisTest` as HTML: per hypothesis its rule, and per head whose rule held on training windows
    the training and held-out mean with CI, the strictest null, q and whether it replicated."""
    parts = ["<div class='rgx'><style>" + STYLE + "</style>",
             f"<div class='note'>{html.escape(result.text)}; {result.n_windows['train']} training and "
             f"{result.n_windows['heldout']} held-out windows</div>"]
    for h in result.hypotheses:
        found = [f for f in result.findings if f.pattern == h.detector]
        parts.append(f"<div><b>{html.escape(h.name)}</b>: {html.escape(h.description)}</div>"
                     f"<div class='note'>rule: {html.escape(result.rules[h.detector])}</div>")
        if not found:
            parts.append("<div>no head meets the rule on training windows: not supported</div>")
            continue
        rows = "".join(
            f"<tr><th>{f.head_name}</th><td>{_number(f.train.mean)}</td><td>{_number(f.heldout.mean)} "
            f"[{_number(f.heldout.ci_low)}, {_number(f.heldout.ci_high)}]</td>"
            f"<td>{_number(f.heldout.mean - f.effect)}</td><td>{_number(f.heldout.q, 4)}</td>"
            f"<td>{'yes' if f.replicated else 'no'}</td></tr>" for f in found)
        parts.append("<table><tr><th>head</th><th>train mean</th><th>held-out mean [95% CI]</th>"
                     f"<th>strictest null</th><th>held-out q</th><th>replicated</th></tr>{rows}</table>")
    return "".join(parts) + "</div>"

"""The HTML of sandmle-report: one self-contained page (inline CSS, images as data URIs).

The page's only script checks, once loaded, that every image decoded and every trajectory
block rendered, and records it on <body> (`data-images`, `data-trajectories`), so a
headless browser's DOM dump can confirm what a person would see.
"""

from __future__ import annotations

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>sandmle report: {{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1180px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: .2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
.meta { color: #666; font-size: .9em; }
nav a { margin-right: 1em; }
.curves { display: flex; flex-wrap: wrap; gap: 12px; }
.curves figure { margin: 0; border: 1px solid #ddd; padding: 4px; background: #fff; }
.curves img { width: 560px; height: auto; display: block; }
figcaption { font-size: .85em; color: #444; text-align: center; }
table { border-collapse: collapse; font-size: .88em; margin: .6em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.overall td { font-weight: bold; background: #f3f3f3; }
details.traj { border: 1px solid #ccc; border-radius: 4px; margin: .4em 0; padding: .3em .6em; }
details.traj > summary { cursor: pointer; font-family: monospace; }
.ok { color: #17702a; } .bad { color: #b0261e; }
.turn { border-left: 3px solid #88a; margin: .5em 0 .5em .4em; padding-left: .6em; }
.turn h4 { margin: .2em 0; font-size: .95em; }
pre { background: #f7f7f9; border: 1px solid #e3e3e8; padding: .4em; white-space: pre-wrap;
      word-break: break-word; max-height: 24em; overflow: auto; font-size: .82em; margin: .2em 0; }
.label { font-size: .8em; color: #555; text-transform: uppercase; letter-spacing: .04em; }
.empty { color: #888; font-style: italic; }
</style>
</head>
<body data-images="pending" data-trajectories="pending">
<h1>sandmle report: {{ title }}</h1>
<div class="meta">{{ workdir }} &middot; generated {{ generated }}{% if note %} &middot; {{ note }}{% endif %}</div>
<nav><a href="#curves">curves</a><a href="#tables">tables</a><a href="#trajectories">trajectories</a></nav>

<h2 id="curves">Curves</h2>
{% if figures %}<div class="curves">
{% for f in figures %}<figure><img alt="{{ f.title }}" src="data:image/png;base64,{{ f.png }}"><figcaption>{{ f.title }}</figcaption></figure>
{% endfor %}</div>{% else %}<p class="empty">No metrics to plot in this workdir.</p>{% endif %}

<h2 id="tables">Tables</h2>
{% for t in tables %}<h3>{{ t.title }}</h3>{% if t.note %}<p class="meta">{{ t.note }}</p>{% endif %}
<table><tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in t.rows %}<tr{% if r.get("overall") %} class="overall"{% endif %}>{% for c in r.cells %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% else %}<p class="empty">No evaluation table in this workdir.</p>{% endfor %}

<h2 id="trajectories">Trajectories</h2>
{% for s in trajectory_sets %}<h3>{{ s.name }} <span class="meta">({{ s.shown }} of {{ s.total }})</span></h3>
{% for t in s.trajectories %}<details class="traj"{% if loop.first %} open{% endif %}>
<summary>{{ t.task_id }} &middot; seed/sample {{ t.sample }} &middot; reward {{ "%.3f"|format(t.reward) }} &middot;
<span class="{{ 'ok' if t.valid else 'bad' }}">{{ 'valid' if t.valid else 'invalid' }}</span>{% if t.medal %} &middot; {{ t.medal }}{% endif %}
&middot; {{ t.termination }} &middot; {{ t.turns|length }} turns</summary>
<div class="label">reward parts</div>
<table><tr>{% for k in t.parts %}<th>{{ k }}</th>{% endfor %}</tr><tr>{% for k, v in t.parts.items() %}<td>{{ "%.3f"|format(v) }}</td>{% endfor %}</tr></table>
{% if t.report %}<div class="meta">{{ t.report }}</div>{% endif %}
{% for u in t.turns %}<div class="turn"><h4>turn {{ u.index }}: {{ u.action }}{% if u.status %} &rarr; <span class="{{ 'ok' if u.status == 'ok' else 'bad' }}">{{ u.status }}</span>{% endif %}</h4>
{% if u.think %}<div class="label">think</div><pre>{{ u.think }}</pre>{% endif %}
{% if u.error %}<div class="label">malformed</div><pre class="bad">{{ u.error }}</pre>{% endif %}
{% if u.call %}<div class="label">{{ u.call_label }}</div><pre>{{ u.call }}</pre>{% endif %}
{% if u.observation is not none %}<div class="label">observation</div><pre>{{ u.observation }}</pre>{% endif %}
</div>{% endfor %}
</details>
{% endfor %}{% else %}<p class="empty">No trajectories in this workdir.</p>{% endfor %}
<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var good = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images", good + "/" + imgs.length);
  var trajs = document.querySelectorAll("details.traj .turn").length;
  document.body.setAttribute("data-trajectories",
      document.querySelectorAll("details.traj").length + " blocks, " + trajs + " turns");
});
</script>
</body>
</html>
"""

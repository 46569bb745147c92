"""Writing an :class:`~memjax.audit.AuditReport`: one self-contained HTML page, a CSV, a JSON.

``report.html`` holds every figure as an embedded base64 PNG (no other file is needed to open
it), in the sections of :data:`SECTIONS`; ``samples.csv`` has one row per generated sample and one
column per score and label (:func:`sample_columns`); ``summary.json`` is
:attr:`AuditReport.summary` plus the model description and the config.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os

import numpy as np

from memjax import lid, memorisation, sampling

# (id, title) of every section of report.html, in page order.
SECTIONS = (
  ("summary", "Summary"),
  ("model", "Model"),
  ("generation", "Generation"),
  ("memorisation", "Memorisation"),
  ("lid", "Local intrinsic dimension"),
  ("sharpness", "Sharpness"),
  ("guidance", "Classifier-free guidance"),
  ("regimes", "Noise regimes"),
  ("weight-space", "Weight space"),
  ("most-memorised", "Most memorised samples"),
  ("config", "Config"),
)

HTML_FILE, CSV_FILE, JSON_FILE = "report.html", "samples.csv", "summary.json"


def _jsonable(obj):
  if isinstance(obj, dict):
    return {str(k): _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_jsonable(v) for v in obj]
  if hasattr(obj, "to_dict"):
    return _jsonable(obj.to_dict())
  if isinstance(obj, (np.ndarray, np.generic)) or type(obj).__module__.startswith("jax"):
    arr = np.asarray(obj)
    return arr.item() if arr.ndim == 0 else arr.tolist()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None if math.isnan(obj) else str(obj)
  return obj


def sample_columns(rep) -> dict:
  """``{column: (N,) values}``: one row per generated sample, every score and label."""
  gen, mem = rep.generation, rep.memorisation
  cols = {"sample": np.arange(len(gen.ok))}
  if gen.labels is not None:
    cols["label"] = gen.labels
  cols["result"] = np.asarray([sampling.result_name(c) for c in gen.result])
  cols["num_steps"] = gen.num_steps
  cols["scored"] = gen.ok.astype(int)
  cols.update(nearest=mem.nearest, second=mem.second, d1=mem.d1, d2=mem.d2, ratio=mem.ratio)
  for c, flags in mem.memorised.items():
    cols[f"memorised_c{c}"] = flags.astype(int)
  if rep.lid is not None:
    cols.update(flipd=rep.lid.flipd, flipd_sem=rep.lid.sem, lid_star=rep.lid.lid_star)
    names = np.asarray(lid.MMH_NAMES + ("unscored",))
    for rule, labels in rep.lid.mmh.items():
      cols[f"mmh_{rule}"] = names[labels.astype(int)]
  if rep.sharpness is not None:
    for k, name in enumerate(rep.sharpness.names):
      cols[f"neg_trace_{name}"] = rep.sharpness.neg_trace[k]
      cols[f"trace_sem_{name}"] = rep.sharpness.trace_sem[k]
      cols[f"score_sq_{name}"] = rep.sharpness.score_sq[k]
    if rep.sharpness.residual is not None:
      cols["denoising_residual"] = rep.sharpness.residual
  if rep.guidance is not None:
    cols.update(wen_eps=rep.guidance.wen, hs_detector=rep.guidance.hs)
  if rep.weight_space is not None:
    for name, frac in rep.weight_space.per_sample.items():
      cols[f"laplace_memorised_fraction_{name}"] = frac
  return cols


def write_csv(path: str, rep) -> str:
  cols = sample_columns(rep)
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(list(cols))
    for row in zip(*cols.values()):
      w.writerow([_cell(v) for v in row])
  return path


def _cell(v):
  if isinstance(v, (float, np.floating)):
    return "" if not np.isfinite(v) else f"{float(v):.6g}"
  return v.item() if isinstance(v, np.generic) else v


# Sections of the audit config that belong to one lens (reduced to ``{"enabled": False}`` when
# that lens did not run).
_LENS_SECTIONS = ("lid", "sharpness", "regimes", "weight_space")


def used_config(cfg) -> dict:
  """The part of the audit config this audit used, as a plain dict.

  A lens that did not run keeps only ``{"enabled": False}``; the ``toy`` block appears only for
  the toy experiment; the model and data keys left at their empty defaults are dropped (so a
  Python-API audit does not show a checkpoint or factory it never had). Non-ConfigDict
  configs (a dict) are returned as they are.
  """
  if not hasattr(cfg, "to_dict"):
    return cfg
  out = cfg.to_dict()
  for name in _LENS_SECTIONS:
    if name in out and not out[name].get("enabled", True):
      out[name] = {"enabled": False}
  if out.get("experiment") != "audit.toy":
    out.pop("toy", None)
  empty = ("", (), [], None)
  for key in ("checkpoint", "experiment", "experiment_config"):
    if out.get(key) in empty:
      out.pop(key, None)
  for name in ("model", "data"):
    if isinstance(out.get(name), dict):
      out[name] = {k: v for k, v in out[name].items() if v not in empty}
  return out


def write_json(path: str, rep, cfg=None) -> str:
  out = {"summary": rep.summary, "model": rep.model}
  if cfg is not None:
    out["config"] = used_config(cfg)
  with open(path, "w") as f:
    json.dump(_jsonable(out), f, indent=2)
  return path


# ---------------------------------------------------------------------------
# Figures (matplotlib is imported on first use: ``import memjax`` stays light).


def _pyplot():
  import matplotlib.pyplot as plt

  return plt


def _png(fig) -> str:
  plt = _pyplot()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
  plt.close(fig)
  return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(fig, alt: str) -> str:
  return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(fig)}"/>'


def _labels(rep):
  return rep.memorisation.memorised[memorisation.c_label(rep.memorisation.c)] & rep.generation.ok


def _split_hists(rep, names, bins):
  plt = _pyplot()
  ok, mem = rep.generation.ok, _labels(rep)
  n = len(names)
  cols = min(n, 4)
  rows = -(-n // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
  for a, name in zip(axes.ravel(), names):
    s = rep.detectors[name]
    fin = ok & np.isfinite(s)
    lo, hi = (np.min(s[fin]), np.max(s[fin])) if fin.any() else (0.0, 1.0)
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    a.hist(s[fin & ~mem], edges, alpha=0.6, label="not memorised", color="C0")
    a.hist(s[fin & mem], edges, alpha=0.6, label="memorised", color="C3")
    a.set_title(name, fontsize=9)
  for a in axes.ravel()[n:]:
    a.axis("off")
  if axes[0, 0].get_legend_handles_labels()[0]:
    axes[0, 0].legend(fontsize=7)
  fig.tight_layout()
  return fig


def _roc_figure(rep):
  plt = _pyplot()
  from sklearn import metrics as skm

  ok, mem = rep.generation.ok, _labels(rep)
  fig, a = plt.subplots(figsize=(4.8, 4.2))
  for name, s in rep.detectors.items():
    fin = ok & np.isfinite(s)
    y = mem[fin]
    if y.any() and not y.all():
      fpr, tpr, _ = skm.roc_curve(y, s[fin])
      a.plot(fpr, tpr, label=f"{name} ({skm.roc_auc_score(y, s[fin]):.2f})")
  a.plot([0, 1], [0, 1], "k:", lw=0.8)
  a.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC vs ratio labels")
  if a.get_legend_handles_labels()[0]:
    a.legend(fontsize=6)
  else:
    a.text(0.5, 0.5, "one class only: no ROC", ha="center", transform=a.transAxes)
  return fig


def _ratio_figure(rep, bins):
  plt = _pyplot()
  r = rep.memorisation.ratio[rep.generation.ok]
  fig, a = plt.subplots(figsize=(4.8, 3.2))
  a.hist(r, np.linspace(0, 1, bins + 1), color="C0")
  a.axvline(rep.memorisation.c, color="C3", ls="--", label=f"c = {rep.memorisation.c:.3g}")
  a.set(xlabel="r = d1² / d2²", ylabel="samples", title="nearest-neighbour ratio")
  a.legend(fontsize=8)
  return fig


def _lid_figures(rep):
  plt = _pyplot()
  L, ok, mem = rep.lid, rep.generation.ok, _labels(rep)
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
  for sel, name, col in ((ok & ~mem, "not memorised", "C0"), (mem, "memorised", "C3")):
    if sel.any():
      a.plot(L.noise_to_signal, np.nanmean(L.curve[:, sel], axis=1), "o-", color=col, label=name)
  knee = "knee (refused: grid edge)" if L.knee_on_edge else "knee (diagnostic)"
  a.axvline(L.noise_to_signal[L.knee], color="k", ls=":", label=f"{knee} t0 = {L.knee_t0:.3g}")
  a.axvline(
    L.t0_noise_to_signal, color="C2", ls="--", label=f"detection σ/ψ = {L.t0_noise_to_signal:.3g}"
  )
  a.set(xscale="log", xlabel="σ/ψ at t0", ylabel="mean FLIPD", title="FLIPD over t0")
  a.legend(fontsize=7)
  if L.lid_star_note:
    b.text(0.5, 0.5, f"LID* {L.lid_star_note}", ha="center", wrap=True, transform=b.transAxes)
    b.axis("off")
  else:
    mmh = next(iter(L.mmh.values())).astype(int)
    for k, name in enumerate(lid.MMH_NAMES):
      sel = ok & (mmh == k)
      if sel.any():
        b.scatter(L.lid_star[sel], L.flipd[sel], s=12, label=name, color=f"C{k}")
    lim = [np.nanmin([L.flipd[ok].min(), L.lid_star[ok].min()]) - 0.5]
    lim.append(np.nanmax([L.flipd[ok].max(), L.lid_star[ok].max()]) + 0.5)
    b.plot(lim, lim, "k:", lw=0.8)
    b.set(xlabel="LID* (local PCA, nearest training point)", ylabel="FLIPD at detection σ/ψ")
    b.set_title(f"model LID vs data LID* (MMH classes, rule {next(iter(L.mmh))})")
    b.legend(fontsize=7)
  fig.tight_layout()
  return fig


def _regimes_figure(rep):
  plt = _pyplot()
  R = rep.regimes
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
  a.plot(R.sigmas, R.max_weight, "o-", label="W_σ (concentration)")
  if np.isfinite(R.coverage).all():
    a.plot(R.sigmas, R.coverage, "s-", label="C_σ (coverage)")
  lo, hi = R.boundaries["danger_lo"], R.boundaries["danger_hi"]
  for ax in (a, b):
    if np.isfinite(lo):
      ax.axvspan(lo, hi, color="C3", alpha=0.15, label="danger zone")
    ax.set_xscale("log")
  a.axhline(R.boundaries["threshold"], color="k", ls=":", lw=0.8)
  a.set(xlabel="σ (VE view)", ylim=(-0.02, 1.05), title="noise regimes of the training set")
  a.legend(fontsize=7)
  b.plot(R.sigmas, R.rel_dist, "o-", label="‖D_θ − D*‖ / ‖D* − D_lin‖")
  b.plot(R.sigmas, R.alignment, "s-", label="alignment (1: D*, 0: D_lin)")
  top = np.nanmax(np.concatenate([R.rel_dist, R.alignment]))
  b.set_ylim(-0.5, min(3.0, max(1.5, 1.1 * top)))  # D* − D_lin → 0 at large σ: the ratio blows up
  b.set(xlabel="σ (VE view)", title="model denoiser vs the memorising optimum D*")
  b.legend(fontsize=7)
  fig.tight_layout()
  return fig


def _to_image(x, shape):
  img = np.clip((np.asarray(x, np.float64).reshape(shape) + 1.0) / 2.0, 0.0, 1.0)
  return img[..., 0] if shape[-1] == 1 else img


def most_memorised(rep, k: int) -> np.ndarray:
  """Indices of the ``k`` scored samples with the smallest ratio ``r``."""
  r = np.where(rep.generation.ok, rep.memorisation.ratio, np.inf)
  order = np.argsort(r, kind="stable")
  return order[: min(k, int(rep.generation.ok.sum()))]


def _grid_figure(rep, shape, k):
  plt = _pyplot()
  idx = most_memorised(rep, k)
  gen, mem, train = rep.generation, rep.memorisation, rep.train
  if len(shape) == 3:
    fig, axes = plt.subplots(2, len(idx), figsize=(1.1 * len(idx), 2.6), squeeze=False)
    for j, i in enumerate(idx):
      for row, (img, title) in enumerate(
        ((gen.samples[i], f"#{i} r={mem.ratio[i]:.2g}"), (train[mem.nearest[i]], "nearest"))
      ):
        a = axes[row, j]
        a.imshow(_to_image(img, shape), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        a.set_title(title, fontsize=6)
        a.axis("off")
    fig.suptitle("top: most memorised samples; bottom: their nearest training images", fontsize=8)
    return fig
  # Vectors: the first two coordinates (2D data) or the top-2 principal plane of the training set.
  x = train - train.mean(0)
  basis = np.linalg.svd(x, full_matrices=False)[2][:2].T if train.shape[1] > 2 else np.eye(2)
  proj = lambda v: (np.asarray(v) - train.mean(0)) @ basis
  fig, a = plt.subplots(figsize=(5, 4.5))
  a.scatter(*proj(train).T, s=30, marker="x", c="k", label="training points")
  ok = gen.ok
  a.scatter(*proj(gen.samples[ok]).T, s=8, c="C0", alpha=0.5, label="samples")
  a.scatter(*proj(gen.samples[idx]).T, s=18, c="C3", label="most memorised")
  a.set_title("samples in the training set's top-2 principal plane", fontsize=9)
  a.legend(fontsize=7)
  return fig


# ---------------------------------------------------------------------------
# HTML.


def _fmt(v) -> str:
  if isinstance(v, (float, np.floating)):
    return "–" if not np.isfinite(v) else f"{float(v):.3g}"
  return html.escape(str(v))


def _table(header, rows) -> str:
  head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
  body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
  return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _p(text: str) -> str:
  return f"<p>{html.escape(text)}</p>"


def _rows_of(summary: dict, key: str) -> dict:
  table = summary.get(key, {})
  if key == "membership_baseline":
    table = table.get("detectors", {})
  return {n: d for n, d in table.items() if isinstance(d, dict)}


def summary_rows(summary: dict, key: str = "detection") -> list:
  """``[(detector, AUROC, TPR@FPR, #positive, #negative)]`` of ``summary[key]`` in the fixed
  order the detectors were computed (never re-ordered by the result: an inverted detector stays
  where it is, flagged by :func:`detection_table_rows`)."""
  return [
    (n, d["auroc"], d["tpr_at_fpr"], d["num_positive"], d["num_negative"])
    for n, d in _rows_of(summary, key).items()
  ]


def detection_table_rows(summary: dict, key: str = "detection") -> list:
  """``[(detector, what it measures, expected direction, AUROC, CI, TPR@FPR, #pos, #neg,
  status)]``, fixed order; the status reads ``"inverted — not evidence for this detector"`` when
  AUROC < 0.5."""
  f = lambda v: f"{v:.3f}" if v is not None and np.isfinite(v) else "–"
  return [
    (
      n,
      d.get("meaning", ""),
      d["direction"],
      f(d["auroc"]),
      f"[{f(d['ci_lo'])}, {f(d['ci_hi'])}]",
      f(d["tpr_at_fpr"]),
      d["num_positive"],
      d["num_negative"],
      d["status"],
    )
    for n, d in _rows_of(summary, key).items()
  ]


def _detection_table(summary, key, pos, neg):
  level = summary.get("ci_level", 0.95)
  header = ["detector", "what it measures", "expected direction (fixed a priori)", "AUROC"]
  header += [f"{level:.0%} CI"]
  header += [f"TPR@{summary['fpr'] * 100:g}%FPR", pos, neg, "status"]
  return _table(header, detection_table_rows(summary, key))


def render(rep, cfg=None, files=()) -> str:
  """The report page as one HTML string (figures embedded)."""
  s, bins = rep.summary, 20 if cfg is None else int(cfg.report.bins)
  num_show = 8 if cfg is None else int(cfg.report.num_show)
  sec = {}
  c = rep.memorisation.c
  parts = [_p(f"WARNING: {w}") for w in s.get("warnings", [])]
  if s.get("verdict"):
    parts.append(f"<p><strong>Verdict.</strong> {html.escape(s['verdict'])}</p>")
  parts += [
    _p(
      f"{s['num_scored']} of {s['num_samples']} samples scored; {s['num_memorised']} memorised "
      f"(r ≤ c = {c:.3g}); M_c: " + ", ".join(f"c={k}: {v:.3f}" for k, v in s["M_c"].items())
    ),
    _p(
      "Detection: every detector on the GENERATED samples against their ratio labels (memorised "
      "vs not memorised samples of this model, the only detection evidence here), scored in the "
      "direction fixed before the data; an AUROC below 0.5 is reported as inverted, not flipped."
    ),
    _detection_table(s, "detection", "# memorised", "# not"),
  ]
  if s["num_memorised"] in (0, s["num_scored"]):
    parts.append(
      _p(
        "Every scored sample has the same label, so these AUROCs are undefined (–): this audit "
        "has no detection evidence. The membership baseline below does not replace it."
      )
    )
  pp = s.get("detection_per_prompt")
  if pp:
    if "note" in pp:
      parts.append(_p(f"Per-prompt detection {pp['note']}."))
    else:
      parts += [
        _p(
          "Per prompt (class label): each prompt scores the mean of its generations and is "
          "memorised when at least half of them are; prompts are ranked."
        ),
        _detection_table(s, "detection_per_prompt", "# memorised prompts", "# not"),
      ]
  if "M_c_vs_held_out" in s:
    held = ", ".join(f"c={k}: {v:.3f}" for k, v in s["M_c_held_out"].items())
    d = s["M_c_vs_held_out"]
    parts.append(
      _p(
        f"Chance floor: held-out REAL points are flagged by the criterion at M_c {held}; "
        f"M_c(samples) − M_c(held-out) at c = {c:.3g}: {d['difference']:+.3f} "
        f"(CI [{d['ci_lo']:+.3f}, {d['ci_hi']:+.3f}])."
      )
    )
  if "membership_baseline" in s:
    mb = s["membership_baseline"]
    parts += [
      "<h3>Membership baseline (not detection evidence)</h3>",
      _p(
        f"{mb['what']} ({mb['num_train']} training points, {mb['num_held_out']} held-out). "
        "A high AUROC here says the detector tells members from non-members (or real data "
        "from what the model has seen), not that it finds memorised generated samples."
      ),
      _detection_table(s, "membership_baseline", "# training", "# held-out"),
    ]
  if "mmh_counts_by_rule" in s:
    rows = []
    for rule, counts in s["mmh_counts_by_rule"].items():
      if isinstance(counts, dict):
        rows += [(rule, k, v) for k, v in counts.items()]
      else:
        rows.append((rule, "–", counts))
    parts += [
      _p(
        "MMH classes of the memorised samples (Ross et al.): DD-Mem rule 'paper' = LID* small "
        "relative to D; 'exact_duplicate' = LID* ≈ 0 (copies only); default "
        f"{s['mmh_rule']!r}."
      ),
      _table(["rule", "MMH class", "count"], rows),
    ]
  if "danger_zone" in s:
    dz = s["danger_zone"]
    parts.append(
      _p(
        f"danger zone: {dz['text']}"
        + ("" if dz["coverage_available"] else " — no held-out data: coverage not measured")
        + f". Definitions — {dz['definition']}."
      )
    )
  sec["summary"] = "".join(parts)
  sec["model"] = _table(["field", "value"], list(rep.model.items()))
  sec["generation"] = _table(["field", "value"], list(rep.generation.summary.items()))
  sec["memorisation"] = _img(_ratio_figure(rep, bins), "ratio histogram") + _p(
    "Memorised when the nearest training point is much closer than the second nearest: "
    "d1² ≤ c d2² against the distinct training points."
  )
  det_names = list(rep.detectors)
  if rep.lid is not None:
    names = [n for n in det_names if n in ("neg_flipd", "lid_star_minus_flipd")]
    sec["lid"] = (
      _img(_lid_figures(rep), "FLIPD curve and LID vs LID*")
      + _img(_split_hists(rep, names, bins), "LID histograms")
      + _p(
        f"FLIPD at t0 = {rep.lid.t0:.4g} (σ/ψ = {rep.lid.t0_noise_to_signal:.3g}, "
        f"{rep.lid.t0_source}; "
        f"{'exact trace' if rep.lid.exact else 'Hutchinson, with its standard error'}). "
        f"The curve's knee (a diagnostic) is at t0 = {rep.lid.knee_t0:.4g}"
        + (" — on the grid's edge, refused as a detection time" if rep.lid.knee_on_edge else "")
        + ". LID* by local PCA of the nearest training point's neighbourhood"
        + (f": {rep.lid.lid_star_note}." if rep.lid.lid_star_note else ".")
      )
    )
  else:
    sec["lid"] = _p("LID lens not run.")
  if rep.sharpness is not None:
    names = [n for n in det_names if n.startswith(("neg_trace_", "score_sq_"))]
    times = ", ".join(
      f"{n}: t = {t:.4g} (σ/ψ = {r:.3g})"
      for n, t, r in zip(rep.sharpness.names, rep.sharpness.times, rep.sharpness.noise_to_signal)
    )
    sec["sharpness"] = _img(_split_hists(rep, names, bins), "sharpness histograms") + _p(
      "−tr ∇s and ‖s‖²: at 'det' averaged over noisy states ψ x̂ + σ ε at the detection noise "
      "level (the expectation of the sharpness papers), at each σ/ψ time at the sampler's state "
      f"from the same noise; times {times}. The clean-point ‖s(ψ x̂)‖² is the denoising "
      "residual (column denoising_residual of samples.csv), not sharpness and not a detector."
    )
  else:
    sec["sharpness"] = _p("Sharpness lens not run.")
  if rep.guidance is not None:
    sec["guidance"] = _img(
      _split_hists(rep, ["wen_eps", "hs_detector"], bins), "guidance histograms"
    ) + _p(f"Wen et al.'s ‖ε̂(x, c) − ε̂(x, ∅)‖ and ‖HΔ sΔ‖² at t = {rep.guidance.time:.4g}.")
  else:
    sec["guidance"] = _p("Not a class-conditional model: no guidance detectors.")
  roc = _img(_roc_figure(rep), "ROC curves") if det_names else ""
  sec["summary"] += roc
  if rep.regimes is not None:
    sec["regimes"] = _img(_regimes_figure(rep), "noise regimes")
  else:
    sec["regimes"] = _p("Noise-regime lens not run.")
  if rep.weight_space is not None:
    w = rep.weight_space
    rows = [(n, w.num_ok[n], *m.values()) for n, m in w.m_c.items()]
    keys = list(next(iter(w.m_c.values())))
    sec["weight-space"] = _p(
      f"Laplace samples of the weights at η = {w.eta:g} ({w.num_total} per sampler, paired), "
      f"the same noise as the MAP's samples; ‖∇L(θ*)‖ = {w.grad_norm:.3g}; MAP M_c: "
      + ", ".join(f"c={k}: {v:.3f}" for k, v in s["M_c"].items())
    ) + _table(["sampler", "# ok"] + [f"M_c c={k}" for k in keys], rows)
  else:
    sec["weight-space"] = _p(
      "Weight-space view not run (enable with --config.weight_space.enabled)."
    )
  shape = tuple(rep.model["data_shape"])
  idx = most_memorised(rep, num_show)
  mem = rep.memorisation
  sec["most-memorised"] = _img(_grid_figure(rep, shape, num_show), "most memorised") + _table(
    ["sample", "ratio r", "d1", "nearest training index"],
    [(int(i), mem.ratio[i], mem.d1[i], int(mem.nearest[i])) for i in idx],
  )
  cp = s.get("copies")
  if cp is not None:
    sec["most-memorised"] += _p(
      f"Per training point: how many memorised samples (c = {c:.3g}) copy it, and how many times "
      f"it appears in the training set ({cp['num_distinct_copied']} distinct points copied; "
      f"{cp['num_duplicated_copied']} of the {cp['num_duplicated_in_train']} duplicated training "
      "points among them)."
    ) + _table(
      ["training index", "copied by (samples)", "multiplicity in the training set"],
      [(r["training_index"], r["copied_by"], r["multiplicity"]) for r in cp["rows"][:50]],
    )
  used = used_config(cfg) if cfg is not None else None
  cfg_text = json.dumps(_jsonable(used), indent=1)
  sec["config"] = (
    (_p("Files: " + ", ".join(files)) if files else "")
    + _p("The settings this audit used (lenses that did not run and empty keys left out).")
    + f"<pre>{html.escape(cfg_text)}</pre>"
  )
  nav = " · ".join(f'<a href="#{i}">{html.escape(t)}</a>' for i, t in SECTIONS)
  body = "".join(
    f'<section id="{i}"><h2>{html.escape(t)}</h2>{sec[i]}</section>' for i, t in SECTIONS
  )
  style = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
    "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;"
    "font-size:0.85em}img{max-width:100%}pre{font-size:0.75em;background:#f6f6f6;padding:0.5em}"
  )
  return (
    '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"/>'
    f"<title>memjax audit</title><style>{style}</style></head><body>"
    f"<h1>memjax audit</h1><nav>{nav}</nav>{body}</body></html>"
  )


def write(rep, workdir: str, cfg=None) -> dict:
  """Write ``report.html``, ``samples.csv`` and ``summary.json`` into ``workdir``.

  Returns ``{"html": path, "csv": path, "json": path}``.
  """
  os.makedirs(workdir, exist_ok=True)
  paths = {
    "html": os.path.join(workdir, HTML_FILE),
    "csv": os.path.join(workdir, CSV_FILE),
    "json": os.path.join(workdir, JSON_FILE),
  }
  write_csv(paths["csv"], rep)
  write_json(paths["json"], rep, cfg)
  with open(paths["html"], "w") as f:
    f.write(render(rep, cfg, files=(CSV_FILE, JSON_FILE)))
  return paths

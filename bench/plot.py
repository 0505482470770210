#!/usr/bin/env python3
"""SVG bar charts of benchmark results, standard library only.

    python3 bench/plot.py bench/results/lab-latest.json -o bench/results/

writes one SVG per (frame size, flows, queues) group, comparing the setups (kernel-route,
kernel-nat, xnat-forward, xnat-nat, ...) on forwarded Mpps (or --metric gbps), each bar
labelled with its value, the title naming the group, a footer with the machine and the
command when the input has them. Prints the paths it wrote.

Input, either of:

* the JSON bench/run.sh writes (bench/results/lab-*.json):
    {"machine": {...}, "command": "...", "cells": [
        {"mode": "xnat-nat", "size": 64, "flows": 1000, "queues": 1,
         "rx_mpps": 0.22, "rx_gbps": 0.11, "loss_pct": 34.8, "offered_mpps": 0.34, ...}]}
* a plain list of rows (for hardware runs recorded by hand, bench/trex/README.md):
    [{"setup": "xnat-forward", "size": 64, "flows": 1000, "queues": 4,
      "mpps": 14.2, "gbps": 7.3, "loss": 0.0}, ...]
  or the same list as {"rows": [...]} with optional "machine" and "command" keys.

Field names: setup|mode, size, flows, queues, mpps|rx_mpps, gbps|rx_gbps, loss|loss_pct
(percent), optional offered_mpps (drawn as a thin marker above the bar). Rows repeated
for the same group and setup (several runs) are averaged and labelled with their count.
"""
import argparse
import json
import math
import os
import sys
from xml.sax.saxutils import escape

# Known setups first, in this order; others follow in order of appearance.
SETUP_ORDER = ["kernel-route", "kernel-nat", "nftables-masq", "xnat-forward", "xnat-nat"]
COLOURS = {
    "kernel-route": "#9e9e9e",
    "kernel-nat": "#616161",
    "nftables-masq": "#616161",
    "xnat-forward": "#64b5f6",
    "xnat-nat": "#1565c0",
}
OTHER_COLOURS = ["#81c784", "#ffb74d", "#ba68c8", "#4db6ac", "#e57373", "#a1887f"]

W = 760
LEFT, RIGHT, TOP = 78, 24, 64
PLOT_H = 250
FONT = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\""


class InputError(Exception):
    pass


def pick(row, *names, default=None):
    for n in names:
        if n in row and row[n] is not None:
            return row[n]
    return default


def load(path):
    """Returns (rows, machine, command); rows are normalised dicts."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError("%s: %s" % (path, e))
    machine, command = None, None
    if isinstance(doc, dict):
        machine, command = doc.get("machine"), doc.get("command")
        raw = doc.get("cells", doc.get("rows"))
        if raw is None:
            raise InputError("%s: a JSON object needs a \"cells\" or \"rows\" list" % path)
    else:
        raw = doc
    if not isinstance(raw, list):
        raise InputError("%s: expected a list of rows" % path)
    rows = []
    for i, r in enumerate(raw):
        if not isinstance(r, dict):
            raise InputError("%s: row %d is not an object" % (path, i))
        setup = pick(r, "setup", "mode")
        missing = [n for n, v in (("setup", setup), ("size", r.get("size")),
                                  ("flows", r.get("flows")), ("queues", r.get("queues")))
                   if v is None]
        if missing:
            raise InputError("%s: row %d lacks %s" % (path, i, ", ".join(missing)))
        try:
            rows.append({
                "setup": str(setup),
                "size": int(r["size"]),
                "flows": int(r["flows"]),
                "queues": int(r["queues"]),
                "mpps": num(pick(r, "mpps", "rx_mpps")),
                "gbps": num(pick(r, "gbps", "rx_gbps")),
                "loss": num(pick(r, "loss", "loss_pct")),
                "offered_mpps": num(pick(r, "offered_mpps")),
            })
        except (TypeError, ValueError) as e:
            raise InputError("%s: row %d: %s" % (path, i, e))
    if not rows:
        raise InputError("%s: no rows" % path)
    return rows, machine, command


def num(v):
    if v is None:
        return None
    x = float(v)
    return x if math.isfinite(x) else None


def fmt_flows(n):
    if n >= 1000000 and n % 100000 == 0:
        return "%gM" % (n / 1e6)
    if n >= 1000 and n % 100 == 0:
        return "%gk" % (n / 1e3)
    return str(n)


def fmt_value(v):
    if v is None:
        return "n/a"
    if v >= 100:
        return "%.1f" % v
    if v >= 10:
        return "%.2f" % v
    return "%.3f" % v


def nice_ceiling(v):
    """Upper bound of the axis and tick step: 1, 2, 2.5 or 5 times a power of ten."""
    if v <= 0:
        return 1.0, 0.2
    raw = v / 5.0
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        step = m * mag
        if step * 5 >= v:
            break
    top = step * math.ceil(v / step - 1e-9)
    if top < v * 1.08:  # room for the value labels
        top += step
    return top, step


def group_rows(rows):
    groups = {}
    for r in rows:
        groups.setdefault((r["size"], r["flows"], r["queues"]), []).append(r)
    return groups


def setups_in_order(rows):
    seen = []
    for r in rows:
        if r["setup"] not in seen:
            seen.append(r["setup"])
    known = [s for s in SETUP_ORDER if s in seen]
    return known + [s for s in seen if s not in SETUP_ORDER]


def mean(values):
    vs = [v for v in values if v is not None]
    return sum(vs) / len(vs) if vs else None


def wrap(text, width):
    out, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = (line + " " + word) if line else word
    if line:
        out.append(line)
    return out


def machine_text(machine):
    if not machine:
        return None
    if not isinstance(machine, dict):
        return str(machine)
    parts = []
    for key, fmt in (("cpu", "%s"), ("nproc", "%s CPUs"), ("kernel", "kernel %s"),
                     ("nic", "NIC %s"), ("xnat_rev", "xnat %s")):
        if machine.get(key) not in (None, ""):
            parts.append(fmt % machine[key])
    parts += ["%s %s" % (k, v) for k, v in machine.items()
              if k not in ("cpu", "nproc", "kernel", "nic", "xnat_rev")]
    return ", ".join(parts)


def render(group, rows, metric, machine, command, all_setups):
    size, flows, queues = group
    setups = [s for s in all_setups if any(r["setup"] == s for r in rows)]
    bars = []
    for s in setups:
        mine = [r for r in rows if r["setup"] == s]
        bars.append({
            "setup": s,
            "value": mean(r[metric] for r in mine),
            "offered": mean(r["offered_mpps"] for r in mine) if metric == "mpps" else None,
            "loss": mean(r["loss"] for r in mine),
            "n": len(mine),
        })
    peak = max([b["value"] or 0 for b in bars] + [b["offered"] or 0 for b in bars])
    top, step = nice_ceiling(peak)
    unit = "Mpps" if metric == "mpps" else "Gbit/s"
    title = "%d B frames, %s flow%s, %d queue%s: forwarded %s" % (
        size, fmt_flows(flows), "" if flows == 1 else "s", queues, "" if queues == 1 else "s", unit)

    footer = []
    mt = machine_text(machine)
    if mt:
        footer += wrap("Machine: " + mt, 118)
    if command:
        footer += wrap("Command: " + str(command), 118)
    plot_w = W - LEFT - RIGHT
    base_y = TOP + PLOT_H
    has_offered = any(b["offered"] for b in bars)
    height = base_y + 62 + (20 if has_offered else 0) + 16 * len(footer)

    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" %s>'
           % (W, height, W, height, FONT),
           '<rect width="100%" height="100%" fill="#ffffff"/>',
           '<text x="%d" y="30" font-size="17" font-weight="bold">%s</text>' % (LEFT - 40, escape(title))]
    # grid and y axis
    ticks = int(round(top / step))
    for i in range(ticks + 1):
        v = step * i
        y = base_y - PLOT_H * v / top
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="1"/>'
                   % (LEFT, y, LEFT + plot_w, y, "#444444" if i == 0 else "#e0e0e0"))
        out.append('<text x="%d" y="%.1f" font-size="12" text-anchor="end" fill="#444444">%s</text>'
                   % (LEFT - 8, y + 4, escape(("%g" % round(v, 6)))))
    out.append('<text transform="translate(%d %d) rotate(-90)" font-size="13" text-anchor="middle" '
               'fill="#444444">%s</text>' % (LEFT - 52, TOP + PLOT_H // 2, escape("forwarded " + unit)))
    # bars
    slot = plot_w / max(1, len(bars))
    bar_w = min(110.0, slot * 0.6)
    for i, b in enumerate(bars):
        cx = LEFT + slot * (i + 0.5)
        colour = COLOURS.get(b["setup"]) or OTHER_COLOURS[all_setups.index(b["setup"]) % len(OTHER_COLOURS)]
        v = b["value"]
        if v is not None and v > 0:
            h = PLOT_H * v / top
            out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>'
                       % (cx - bar_w / 2, base_y - h, bar_w, h, colour,
                          escape("%s: %s %s" % (b["setup"], fmt_value(v), unit))))
        label_y = base_y - (PLOT_H * v / top if v else 0) - 8
        if b["offered"] is not None and b["offered"] > 0:
            oy = base_y - PLOT_H * b["offered"] / top
            out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#d32f2f" stroke-width="2" '
                       'stroke-dasharray="4 3"><title>offered %s Mpps</title></line>'
                       % (cx - bar_w / 2 - 4, oy, cx + bar_w / 2 + 4, oy, fmt_value(b["offered"])))
            if label_y - 14 < oy < label_y + 6:  # the line would cross the label: go above it
                label_y = oy - 6
        out.append('<text x="%.1f" y="%.1f" font-size="14" font-weight="bold" text-anchor="middle">%s</text>'
                   % (cx, label_y, escape(fmt_value(v))))
        out.append('<text x="%.1f" y="%d" font-size="13" text-anchor="middle">%s</text>'
                   % (cx, base_y + 20, escape(b["setup"])))
        sub = []
        if b["loss"] is not None:
            sub.append("loss %.1f %%" % b["loss"])
        if b["n"] > 1:
            sub.append("mean of %d" % b["n"])
        if sub:
            out.append('<text x="%.1f" y="%d" font-size="11" text-anchor="middle" fill="#666666">%s</text>'
                       % (cx, base_y + 36, escape(", ".join(sub))))
    y = base_y + 62
    if has_offered:
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#d32f2f" stroke-width="2" '
                   'stroke-dasharray="4 3"/>' % (LEFT, y - 4, LEFT + 24, y - 4))
        out.append('<text x="%d" y="%d" font-size="11" fill="#444444">offered by the generator</text>'
                   % (LEFT + 30, y))
        y += 20
    for line in footer:
        out.append('<text x="%d" y="%d" font-size="11" fill="#444444">%s</text>' % (LEFT - 40, y, escape(line)))
        y += 16
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description="SVG bar charts of bench results, one per (size, flows, queues).")
    ap.add_argument("input", help="results JSON (bench/run.sh output, or a list of rows)")
    ap.add_argument("-o", "--outdir", help="output directory (default: the input's directory)")
    ap.add_argument("--metric", choices=("mpps", "gbps"), default="mpps",
                    help="what the bars show (default: mpps)")
    ap.add_argument("--prefix", help="file name prefix (default: the input's name without .json)")
    args = ap.parse_args(argv)
    try:
        rows, machine, command = load(args.input)
    except InputError as e:
        print("plot.py: %s" % e, file=sys.stderr)
        return 2
    outdir = args.outdir or os.path.dirname(os.path.abspath(args.input))
    os.makedirs(outdir, exist_ok=True)
    prefix = args.prefix or os.path.splitext(os.path.basename(args.input))[0]
    all_setups = setups_in_order(rows)
    groups = group_rows(rows)
    for key in sorted(groups):
        size, flows, queues = key
        svg = render(key, groups[key], args.metric, machine, command, all_setups)
        name = "%s-q%d-%dB-%sflows%s.svg" % (prefix, queues, size, fmt_flows(flows),
                                             "" if args.metric == "mpps" else "-gbps")
        path = os.path.join(outdir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(svg)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""out/timeline.png without matplotlib: an RGB canvas, a 3x5 pixel font, a PNG encoder (zlib + struct)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

RGB = tuple[int, int, int]

STATE_COLOURS: dict[str, RGB] = {
    "alive": (76, 175, 80), "suspect": (255, 193, 7), "dead": (229, 57, 53), "left": (66, 133, 244),
    "unknown": (200, 200, 200), "down": (90, 90, 90),
}
FAULT_COLOURS: dict[str, RGB] = {
    "part21": (156, 39, 176), "part111": (106, 27, 154), "conflict": (233, 30, 99), "oneway": (0, 150, 136),
    "loss": (255, 112, 67), "tbf": (121, 85, 72), "sigstop": (3, 169, 244), "kill_daemon": (33, 33, 33),
    "kill_guard": (96, 125, 139), "kill_child": (158, 158, 158), "disk_full": (205, 220, 57),
    "clock_step": (255, 87, 34), "crash": (0, 0, 0),
}

# 3x5 glyphs, rows top to bottom, "#" lit
_FONT = {
    "A": "###,#.#,###,#.#,#.#", "B": "##.,#.#,##.,#.#,##.", "C": "###,#..,#..,#..,###", "D": "##.,#.#,#.#,#.#,##.",
    "E": "###,#..,##.,#..,###", "F": "###,#..,##.,#..,#..", "G": "###,#..,#.#,#.#,###", "H": "#.#,#.#,###,#.#,#.#",
    "I": "###,.#.,.#.,.#.,###", "J": "..#,..#,..#,#.#,###", "K": "#.#,#.#,##.,#.#,#.#", "L": "#..,#..,#..,#..,###",
    "M": "#.#,###,###,#.#,#.#", "N": "##.,#.#,#.#,#.#,#.#", "O": "###,#.#,#.#,#.#,###", "P": "###,#.#,###,#..,#..",
    "Q": "###,#.#,#.#,###,..#", "R": "##.,#.#,##.,#.#,#.#", "S": "###,#..,###,..#,###", "T": "###,.#.,.#.,.#.,.#.",
    "U": "#.#,#.#,#.#,#.#,###", "V": "#.#,#.#,#.#,#.#,.#.", "W": "#.#,#.#,###,###,#.#", "X": "#.#,#.#,.#.,#.#,#.#",
    "Y": "#.#,#.#,.#.,.#.,.#.", "Z": "###,..#,.#.,#..,###",
    "0": "###,#.#,#.#,#.#,###", "1": ".#.,##.,.#.,.#.,###", "2": "###,..#,###,#..,###", "3": "###,..#,###,..#,###",
    "4": "#.#,#.#,###,..#,..#", "5": "###,#..,###,..#,###", "6": "###,#..,###,#.#,###", "7": "###,..#,..#,..#,..#",
    "8": "###,#.#,###,#.#,###", "9": "###,#.#,###,..#,###",
    " ": "...,...,...,...,...", ">": "#..,.#.,..#,.#.,#..", "-": "...,...,###,...,...", ":": "...,.#.,...,.#.,...",
    ".": "...,...,...,...,.#.", "_": "...,...,...,...,###", "+": "...,.#.,###,.#.,...", "/": "..#,..#,.#.,#..,#..",
    "%": "#.#,..#,.#.,#..,#.#", "(": ".#.,#..,#..,#..,.#.", ")": ".#.,..#,..#,..#,.#.", "=": "...,###,...,###,...",
    "'": ".#.,.#.,...,...,...", ",": "...,...,...,.#.,#..",
}


class Canvas:
    def __init__(self, w: int, h: int, bg: RGB = (255, 255, 255)) -> None:
        self.w, self.h = w, h
        self.px = bytearray(bytes(bg) * (w * h))

    def rect(self, x0: int, y0: int, x1: int, y1: int, c: RGB, alpha: float = 1.0) -> None:
        x0, x1 = max(0, min(x0, x1)), min(self.w, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.h, max(y0, y1))
        for y in range(y0, y1):
            row = y * self.w
            if alpha >= 1.0:
                self.px[(row + x0) * 3:(row + x1) * 3] = bytes(c) * (x1 - x0)
                continue
            for x in range(x0, x1):
                i = (row + x) * 3
                for k in range(3):
                    self.px[i + k] = int(self.px[i + k] * (1 - alpha) + c[k] * alpha)

    def text(self, x: int, y: int, s: str, c: RGB = (0, 0, 0), scale: int = 2) -> int:
        """Draw ``s`` (upper-cased); the x after it."""
        for ch in s.upper():
            glyph = _FONT.get(ch, _FONT[" "]).split(",")
            for gy, row in enumerate(glyph):
                for gx, bit in enumerate(row):
                    if bit == "#":
                        self.rect(x + gx * scale, y + gy * scale, x + (gx + 1) * scale, y + (gy + 1) * scale, c)
            x += 4 * scale
        return x

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(self.px[y * self.w * 3:(y + 1) * self.w * 3]) for y in range(self.h))

        def chunk(tag: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def timeline(path: Path, t0: float, t1: float, nodes: tuple[str, ...], verdicts: list[dict[str, Any]],
             faults: list[dict[str, Any]], down: dict[str, list[tuple[float, float]]],
             restarts: dict[str, list[float]] | None = None) -> None:
    """One band per (observer, peer): the observer's view over time; fault lanes on top; faults shaded.

    A daemon started again knows nothing of its peers until it hears of them: its view is
    "unknown" from each of its ``restarts`` until its next verdict."""
    left, right, top = 150, 20, 40
    plot_w = 1200
    band, gap = 22, 6
    lanes = ("net", "proc", "disk", "clock")
    lane_h = 14
    pairs = [(o, p) for o in nodes for p in nodes if o != p]
    bands_top = top + len(lanes) * (lane_h + 3) + 16
    h = bands_top + len(pairs) * (band + gap) + 92
    cv = Canvas(left + plot_w + right, h)
    span = max(1e-6, t1 - t0)

    def x(t: float) -> int:
        return left + int((min(max(t, t0), t1) - t0) / span * plot_w)

    cv.text(10, 10, f"HAFLOWD SOAK: EACH NODE'S VIEW OF EACH PEER OVER {span / 60:.1f} MIN", scale=2)
    # fault lanes
    for i, lane in enumerate(lanes):
        y = top + i * (lane_h + 3)
        cv.text(10, y + 2, lane, scale=2)
        cv.rect(left, y, left + plot_w, y + lane_h, (240, 240, 240))
        for f in faults:
            if f.get("lane") != lane or f.get("start") is None:
                continue
            end = f["end"] if f.get("end") is not None else f["start"]
            cv.rect(x(f["start"]), y, max(x(end), x(f["start"]) + 2), y + lane_h,
                    FAULT_COLOURS.get(f["kind"], (0, 0, 0)))
    # the bands
    for j, (o, p) in enumerate(pairs):
        y = bands_top + j * (band + gap)
        cv.text(10, y + 5, f"{o} SEES {p}", scale=2)
        vs = [(v["t"], v["new"]) for v in verdicts if v["observer"] == o and v["peer"] == p]
        vs += [(t, "unknown") for t in (restarts or {}).get(o, [])]
        vs.sort(key=lambda v: v[0])
        state, since = "unknown", t0
        for t, new in vs:
            if t <= t0:
                state = new
                continue
            cv.rect(x(since), y, x(t), y + band, STATE_COLOURS.get(state, (0, 0, 0)))
            state, since = new, t
        cv.rect(x(since), y, x(t1), y + band, STATE_COLOURS.get(state, (0, 0, 0)))
        for a, b in down.get(o, []):
            cv.rect(x(a), y, max(x(b), x(a) + 1), y + band, STATE_COLOURS["down"])
    # faults shaded across the bands (network and process faults: the ones that make verdicts)
    bottom = bands_top + len(pairs) * (band + gap)
    for f in faults:
        if f.get("start") is None or f.get("lane") not in ("net", "proc") or f["kind"] in ("kill_guard", "kill_child"):
            continue
        end = f["end"] if f.get("end") is not None else f["start"]
        cv.rect(x(f["start"]), bands_top - 4, max(x(end), x(f["start"]) + 1), bottom - gap,
                FAULT_COLOURS.get(f["kind"], (0, 0, 0)), alpha=0.18)
    # minute ticks
    for m in range(int(span // 60) + 1):
        tx = x(t0 + m * 60)
        cv.rect(tx, bottom - gap, tx + 1, bottom, (0, 0, 0))
        cv.text(tx - 4, bottom + 2, f"{m}M", scale=2)
    # legend
    ly = bottom + 22
    lx = cv.text(10, ly, "VIEW:", scale=2) + 6
    for name in ("alive", "suspect", "dead", "left", "unknown", "down"):
        cv.rect(lx, ly, lx + 12, ly + 10, STATE_COLOURS[name])
        lx = cv.text(lx + 16, ly, name, scale=2) + 10
    ly += 20
    lx = cv.text(10, ly, "FAULTS:", scale=2) + 6
    for k in ("part21", "part111", "conflict", "oneway", "loss", "tbf", "sigstop"):
        cv.rect(lx, ly, lx + 12, ly + 10, FAULT_COLOURS[k])
        lx = cv.text(lx + 16, ly, k.replace("_", " "), scale=2) + 10
    ly += 20
    lx = 10 + 8 * 8 + 6
    for k in ("kill_daemon", "kill_guard", "kill_child", "disk_full", "clock_step", "crash"):
        cv.rect(lx, ly, lx + 12, ly + 10, FAULT_COLOURS[k])
        lx = cv.text(lx + 16, ly, k.replace("_", " "), scale=2) + 10
    path.write_bytes(cv.png())

"""The pygame window of `worldssm play`: panes of reality and dreams, an error strip, a HUD.

Keys held are tracked from KEYDOWN / KEYUP events (not `pygame.key.get_pressed`), so a test can
drive the app by posting events. Control keys (a keymap may not bind them):

    m  human <-> agent        v  view: both -> real -> dream     p  pause     n  one step (paused)
    return  reset             f  fork a dream from reality       r  record on / off
    [ ]  re-sync every K steps (0: free)   g  set dreams to reality now   h  help on / off
    t  swarm_v0: the selected agent dreams / is real; a click selects an agent (take-over)
    escape  quit
"""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path

import numpy as np

from worldssm.errors import WorldssmError, require
from worldssm.play.session import PlaySession
from worldssm.play.views import StateView, scale_frame

CONTROLS = {
    "m": "human <-> agent", "v": "view both/real/dream", "p": "pause", "n": "one step (paused)",
    "return": "reset", "f": "fork from reality", "r": "record", "[": "re-sync K -", "]": "re-sync K +",
    "g": "sync dreams now", "t": "agent dreams/real (swarm)", "h": "help", "escape": "quit",
}
PANE = (420, 280)  # a pane of a vector env drawn by its renderer, or plotted
IMAGE_PANE = (256, 256)  # 64x64 frames x4
ARENA = 480  # swarm_v0's arena pane
VIEW = 200  # swarm_v0 with image observations: the controlled agent's real and dreamed views
HUD_W = 300
MESSAGE_TICKS = 45  # a message stays on the HUD this many steps (3 s at 15 fps)
STRIP_H = 90
BG, FG, DIM = (16, 16, 22), (230, 230, 230), (140, 140, 150)
REAL_C, DREAM_C = (90, 200, 120), (255, 150, 40)
FORK_C = ((200, 110, 255), (60, 200, 255), (255, 90, 140))


class App:
    """The window and its loop around a PlaySession.

    Args:
        session: the PlaySession to show and drive.
        keymap: a `worldssm.play.keymap.Keymap` for the human's actions.
        fps: frames per second (0: as fast as it goes).
        title: the window's title.
    """

    def __init__(self, session: PlaySession, keymap, fps: int = 15, title: str = "worldssm play"):
        self.pg = require("pygame", "pygame>=2.5")
        self.session, self.keymap, self.fps = session, keymap, int(fps)
        if self.fps < 0:
            raise ValueError(f"fps must be >= 0 (0: no cap), got {fps}")
        s = session
        self.view = StateView(s.env_id, s.image, s.env_kwargs) if not s.swarm else None
        if s.swarm:  # image observations: the controlled agent's own view, real and dreamed, beside the arena
            self.pane, n_panes = (ARENA + (VIEW if s.image else 0), ARENA), 1
        else:
            self.pane, n_panes = (IMAGE_PANE if s.image else PANE), 2 + s.max_forks
        self.cols = min(2, n_panes)  # panes in a grid two wide: reality, dream / forks below
        rows = -(-n_panes // self.cols)
        self.size = (self.cols * self.pane[0] + HUD_W, max(rows * self.pane[1] + STRIP_H, 540))
        self.pg.display.init()
        self.pg.font.init()
        self.screen = self.pg.display.set_mode(self.size)
        self.pg.display.set_caption(title)
        self.font = self.pg.font.Font(None, 20)
        self.small = self.pg.font.Font(None, 17)
        self.clock = self.pg.time.Clock()
        self.held: dict[str, int] = {}
        self._presses = 0
        self.running, self.show_help, self._one_step = True, True, False
        self.frames = 0
        self._drawn_episode = None
        self.frame_ms: collections.deque = collections.deque(maxlen=120)
        self._text_cache: dict = {}

    # ----- input --------------------------------------------------------------------------------
    def handle(self, event) -> None:
        pg, s = self.pg, self.session
        if event.type == pg.QUIT:
            self.running = False
        elif event.type == pg.KEYDOWN:
            name = pg.key.name(event.key)
            if name in CONTROLS:
                self._control(name)
            else:
                self._presses += 1
                self.held[name] = self._presses
        elif event.type == pg.KEYUP:
            self.held.pop(pg.key.name(event.key), None)
        elif event.type == pg.MOUSEBUTTONDOWN and s.swarm:
            x, y = event.pos
            if x < ARENA and y < ARENA:
                side = s.env.cfg.side
                s.select(s.agent_at((x / ARENA * side, (ARENA - y) / ARENA * side)))

    def _control(self, key: str) -> None:
        s = self.session
        try:
            if key == "m":
                s.human = not s.human
                s._replan()
            elif key == "v":
                s.cycle_view()
            elif key == "p":
                s.paused = not s.paused
            elif key == "n":
                self._one_step = True
            elif key == "return":
                s.reset()
            elif key == "f":
                s.fork()
            elif key == "r":
                s.toggle_record()
            elif key in "[]":
                s.resync = max(0, s.resync + (1 if key == "]" else -1))
            elif key == "g":
                s.sync()
            elif key == "t":
                s.toggle_dream()
            elif key == "h":
                self.show_help = not self.show_help
            elif key == "escape":
                self.running = False
        except WorldssmError as exc:  # a switch that cannot be made now is said, not fatal
            s.say(str(exc))

    # ----- the loop -----------------------------------------------------------------------------
    def tick(self) -> None:
        """One frame: events, a session step (unless paused), drawing."""
        t0 = time.perf_counter()
        for event in self.pg.event.get():
            self.handle(event)
        if not self.running:
            return
        s = self.session
        if not s.paused or self._one_step:
            s.step(self.keymap.action(self.held) if s.human else None)
            self._one_step = False
        if self.view is not None and self._drawn_episode != s.episode:  # a new real episode: its terrain, seed
            self.view.reset(s.episode_seed)
            self._drawn_episode = s.episode
        self.draw()
        self.pg.display.flip()
        self.frames += 1
        if self.fps:
            self.clock.tick(self.fps)
        self.frame_ms.append((time.perf_counter() - t0) * 1e3)

    def run(self, frames: int | None = None) -> None:
        """Run until the window closes (or `frames` frames); the recording is written either way."""
        try:
            while self.running and (frames is None or self.frames < frames):
                self.tick()
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.session.close()
        finally:
            if self.view is not None:
                self.view.close()
            self.pg.display.quit()

    @property
    def measured_fps(self) -> float:
        return 1e3 / float(np.mean(self.frame_ms)) if self.frame_ms else 0.0

    def screenshot(self, path) -> Path:
        """Save the window as a PNG."""
        path = Path(path)
        self.pg.image.save(self.screen, str(path))
        return path

    def pixels(self) -> np.ndarray:
        """The window as uint8 [H, W, 3]."""
        return self.pg.surfarray.array3d(self.screen).transpose(1, 0, 2)

    # ----- drawing ------------------------------------------------------------------------------
    def _text(self, text: str, colour=FG, small: bool = False):
        key = (text, colour, small)
        surf = self._text_cache.get(key)
        if surf is None:
            if len(self._text_cache) > 512:
                self._text_cache.clear()
            surf = (self.small if small else self.font).render(text, True, colour)
            self._text_cache[key] = surf
        return surf

    def _blit_frame(self, frame: np.ndarray, x: int, y: int, w: int, h: int) -> None:
        if not self.session.image:
            frame = np.ascontiguousarray(frame[..., :3])
        else:
            frame = scale_frame(np.ascontiguousarray(frame), h)
        surf = self.pg.image.frombuffer(frame.tobytes(), (frame.shape[1], frame.shape[0]), "RGB")
        fw, fh = frame.shape[1], frame.shape[0]
        k = min(w / fw, h / fh)
        if k != 1:
            surf = self.pg.transform.scale(surf, (int(fw * k), int(fh * k)))
        self.screen.blit(surf, (x + (w - surf.get_width()) // 2, y + (h - surf.get_height()) // 2))

    def draw(self) -> None:
        s = self.session
        self.screen.fill(BG)
        if s.swarm:
            self._draw_arena()
        else:
            self._draw_panes()
        self._draw_strip()
        self._draw_hud()

    def _panes(self) -> list:
        """(label, colour, observation or None for reality, track or None) per pane shown."""
        s = self.session
        out = []
        if s.view != "dream":
            out.append(("REAL", REAL_C, None, None))
        if s.view != "real":
            for k, track in enumerate(t for t in s.tracks if t.agent == s.controlled):
                colour = DREAM_C if not track.fork else FORK_C[k % len(FORK_C)]
                mode = "free" if track.fork or not s.resync else f"synced every {s.resync}"
                out.append((f"{track.name.upper()} ({mode}, {track.since_sync} steps)", colour, track.obs, track))
        return out

    def _draw_panes(self) -> None:
        s, (w, h) = self.session, self.pane
        for i, (label, colour, obs, track) in enumerate(self._panes()):
            x, y = (i % self.cols) * w, (i // self.cols) * h
            if self.view.plots:
                self._draw_plot(x, y, w, h, track)
            else:
                frame = (s.obs[0] if s.image else s.env.render()) if track is None else self.view.frame(obs)
                if frame is not None:
                    self._blit_frame(frame, x, y, w, h)
            self.pg.draw.rect(self.screen, colour, (x, y, w, h), 3 if track is not None else 2)
            self.screen.blit(self._text(label, colour), (x + 6, y + 6))
            if track is not None and track.ended:
                self.screen.blit(self._text("predicted end of episode", DREAM_C), (x + 6, y + h - 22))

    def _draw_plot(self, x, y, w, h, track) -> None:
        """Observation dimensions over time: reality in green, the dream in its colour."""
        s = self.session
        real = np.array(s.real_trace) if s.real_trace else None
        dream = np.array(track.trace) if track is not None and track.trace else None
        dims = (real if real is not None else dream).shape[1] if (real is not None or dream is not None) else 0
        if not dims:
            return
        rh = (h - 30) / dims
        for d in range(dims):
            top = y + 26 + d * rh
            vals = [v[:, d] for v in (real, dream) if v is not None]
            lo, hi = min(float(v.min()) for v in vals), max(float(v.max()) for v in vals)
            span = max(hi - lo, 1e-6)
            for series, colour in ((real, REAL_C), (dream, DREAM_C)):
                if series is None or len(series) < 2:
                    continue
                n = len(series)
                pts = [(x + 4 + (w - 8) * j / max(1, n - 1), top + rh - 2 - (rh - 4) * (float(series[j, d]) - lo) / span)
                       for j in range(n)]
                self.pg.draw.lines(self.screen, colour, False, pts, 1)
            self.screen.blit(self._text(f"obs[{d}]", DIM, small=True), (x + 4, top))

    def _draw_arena(self) -> None:
        s, pg = self.session, self.pg
        frame = s.env.render()
        self._blit_frame(frame, 0, 0, ARENA, ARENA)
        k = ARENA / s.env.cfg.side
        to_px = (lambda p: (int(p[0] * k), int(ARENA - p[1] * k)))
        pos = s.positions
        for track in s.tracks:
            rows = np.flatnonzero(s.ids == track.agent)
            if not rows.size or track.pos is None:
                continue
            real = to_px(pos[rows[0]])
            dream = to_px(track.pos)
            pg.draw.line(self.screen, DREAM_C, real, dream, 1)
            pg.draw.circle(self.screen, DREAM_C, dream, max(4, int(s.env.cfg.agent_radius * k) + 2), 2)
        if s.controlled is not None:
            rows = np.flatnonzero(s.ids == s.controlled)
            if rows.size:
                pg.draw.circle(self.screen, (255, 230, 60), to_px(pos[rows[0]]), max(7, int(k)), 2)
        pg.draw.rect(self.screen, REAL_C, (0, 0, ARENA, ARENA), 2)
        label = "REAL arena; click an agent, t: it dreams" if s.image else "REAL arena; orange rings: dreamed positions"
        self.screen.blit(self._text(label, REAL_C), (6, 6))
        if s.image:
            self._draw_views()

    def _draw_views(self) -> None:
        """The controlled agent's egocentric view in reality and in its dream (image models)."""
        s = self.session
        x, side = ARENA + 4, VIEW - 8
        track = next((t for t in s.tracks if t.agent == s.controlled), None)
        real = s._row_obs(s.controlled)
        for k, (label, colour, frame) in enumerate((("its view", REAL_C, real),
                                                    ("its dream", DREAM_C, None if track is None else track.obs))):
            y = 24 + k * (side + 40)
            self.screen.blit(self._text(label, colour, small=True), (x, y - 18))
            self.pg.draw.rect(self.screen, colour, (x - 2, y - 2, side + 4, side + 4), 2)
            if frame is not None:
                self._blit_frame(frame, x, y, side, side)

    def _draw_strip(self) -> None:
        """Each dream's error against reality over the last steps."""
        s, pg = self.session, self.pg
        y0, w = self.size[1] - STRIP_H, self.size[0] - HUD_W
        pg.draw.rect(self.screen, (28, 28, 36), (0, y0, w, STRIP_H))
        tracks = [t for t in s.tracks if (t.agent == s.controlled or s.swarm) and t.errors]
        unit = "pixels, share of 255" if s.image else "arena units" if s.swarm else "std of reality"
        self.screen.blit(self._text(f"dream error ({unit})", DIM, small=True), (6, y0 + 3))
        if not tracks:
            return
        top = max(max(t.errors) for t in tracks) or 1.0
        self.screen.blit(self._text(f"{top:.3g}", DIM, small=True), (w - 50, y0 + 3))
        for k, track in enumerate(tracks[:8]):
            errs = list(track.errors)
            if len(errs) < 2:
                continue
            colour = DREAM_C if not track.fork else FORK_C[k % len(FORK_C)]
            n = len(errs)
            pts = [(4 + (w - 8) * j / max(1, n - 1), y0 + STRIP_H - 4 - (STRIP_H - 22) * e / top)
                   for j, e in enumerate(errs)]
            pg.draw.lines(self.screen, colour, False, pts, 2)

    def _draw_hud(self) -> None:
        s = self.session
        x, y = self.size[0] - HUD_W + 10, 8
        lat = np.array(s.latency_ms) if s.latency_ms else np.zeros(1)
        driver = "human" if s.human else f"agent: {s.agent_name}"
        lines = [
            (f"fps {self.measured_fps:5.1f} (cap {self.fps or 'none'})", FG),
            (f"model step p50 {np.percentile(lat, 50):.2f} ms  p99 {np.percentile(lat, 99):.2f} ms", FG),
        ]
        if s.decide_ms:
            lines.append((f"agent decides p50 {np.percentile(s.decide_ms, 50):.1f} ms", FG))
        lines += [
            (f"drives: {driver}" + ("" if s.controlled is not None or not s.swarm else " (click an agent)"), FG),
            (f"view: {s.view}   re-sync: {'every ' + str(s.resync) if s.resync else 'free'}", FG),
            (f"{'PAUSED' if s.paused else 'running'}   episode {s.episode}  tick {s.tick}", FG),
            (f"return real {s.returns['real']:.1f}" + "".join(
                f"  {t.name} {t.reward:.1f}" for t in s.tracks if t.agent == s.controlled), FG),
            (f"recording: {'ON' if s.recording else 'off'}  {s.recorded_steps} steps, "
             f"{len(s.recorded_shards)} shards", (255, 90, 90) if s.recording else FG),
        ]
        if s.swarm:
            lines.append((f"agents {s.ids.size}, dreaming {len(s.tracks)}, controlled {s.controlled}", FG))
        if s.message and s.tick - s.message_tick <= MESSAGE_TICKS:
            lines.append((s.message[:48], (255, 220, 120)))
        for text, colour in lines:
            self.screen.blit(self._text(text, colour, small=True), (x, y))
            y += 18
        if not self.show_help:
            return
        y += 6
        self.screen.blit(self._text("action keys", DIM, small=True), (x, y))
        y += 16
        for line in self.keymap.describe()[:10]:
            self.screen.blit(self._text(line, FG, small=True), (x, y))
            y += 16
        y += 6
        self.screen.blit(self._text("controls", DIM, small=True), (x, y))
        y += 16
        for key, what in CONTROLS.items():
            if y > self.size[1] - 16:
                break
            self.screen.blit(self._text(f"{key}: {what}", FG, small=True), (x, y))
            y += 16


def headless() -> None:
    """Draw into memory instead of a window (tests, benches, machines without a display)."""
    os.environ["SDL_VIDEODRIVER"] = "dummy"
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

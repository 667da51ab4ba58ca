"""`worldssm play`: the session, the keymaps, the views and the app driven headless by posted
events (SDL's dummy video driver); one test opens a real window under Xvfb."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
pygame = pytest.importorskip("pygame")

from worldssm.data import RolloutDataset  # noqa: E402
from worldssm.play import BUNDLED, open_app  # noqa: E402
from worldssm.play import keymap as keymaps  # noqa: E402
from worldssm.play.views import StateView  # noqa: E402


def _train(env, tmp, agents, ticks, **env_kwargs):
    from worldssm.data import collect
    from worldssm.train import Trainer
    from worldssm.train.config import TrainConfig

    collect(env, agents, ticks, tmp / "data", seed=1, env_kwargs=env_kwargs or None)
    cfg = TrainConfig(preset="DEBUG", steps=2, batch_size=2, seq_len=16, log_every=2, checkpoint_every=2)
    Trainer(tmp / "data", tmp / "run", cfg).run(progress=False)
    return tmp / "run"


@pytest.fixture(scope="module")
def swarm_run(tmp_path_factory):
    return _train("swarm_v0", tmp_path_factory.mktemp("swarm"), 8, 60, max_steps=100)


def press(app, name, down=True):
    kind = pygame.KEYDOWN if down else pygame.KEYUP
    pygame.event.post(pygame.event.Event(kind, key=pygame.key.key_code(name)))


def sent_actions(app, ids=None):
    """Record the actions reality is stepped with (and, into `ids`, the agents they were for)."""
    env, seen = app.session.env, []
    step = env.step

    def spy(actions):
        seen.append(np.array(actions))
        if ids is not None:
            ids.append(app.session.ids.copy())
        return step(actions)

    env.step = spy
    return seen


@pytest.fixture
def app(tmp_path):
    """The bundled CartPole-v1 model, played from its checkpoint directory."""
    a = open_app(BUNDLED, fps=0, agent="random", record_dir=tmp_path / "rec")
    yield a
    a.close()


# ----- keymaps ----------------------------------------------------------------------------------
def test_derived_keymaps_follow_the_env():
    cart = keymaps.derive({"type": "discrete", "n": 2}, "CartPole-v1")
    assert cart.action({"right": 1}) == 1 and cart.action({"left": 1}) == 0 and cart.action({}) == 0
    assert cart.action({"left": 1, "right": 2}) == 1, "the key pressed last wins"
    car = keymaps.derive({"type": "discrete", "n": 3}, "MountainCar-v0")
    assert car.action({}) == 1 and car.action({"right": 1}) == 2 and car.action({"2": 1}) == 2
    box = {"type": "box", "shape": [1], "dtype": "float32", "low": np.array([-2.0], np.float32),
           "high": np.array([2.0], np.float32)}
    pend = keymaps.derive(box, "Pendulum-v1")
    assert pend.action({}) == pytest.approx([0.0]) and pend.action({"left": 1}) == pytest.approx([-2.0])
    assert pend.action({"right": 1}) == pytest.approx([2.0]) and pend.action({"left": 1, "right": 2}) == pytest.approx([0.0])
    lunar = keymaps.derive({**box, "shape": [2], "low": -np.ones(2, np.float32), "high": np.ones(2, np.float32)},
                           "LunarLanderContinuous-v3")
    assert lunar.action({}) == pytest.approx([-1, 0]), "the main engine rests off"
    assert lunar.action({"up": 1, "left": 2}) == pytest.approx([1, -1])
    pong = keymaps.derive({"type": "discrete", "n": 6}, "worldssm/Pong64-v0",
                          ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"])
    assert pong.action({"right": 1}) == 2 and pong.action({"right": 1, "space": 2}) == 4, "the larger combo wins"
    assert pong.action({}) == 0
    assert any("right+space" in line for line in pong.describe())


def test_keymap_files_are_checked_line_by_line(tmp_path):
    discrete = {"type": "discrete", "n": 3}
    good = tmp_path / "good.txt"
    good.write_text("# mine\nq = 0\ne = 2   # right\ndefault = 1\nq+e = 1\n")
    km = keymaps.load(good, discrete)
    assert km.action({"q": 1}) == 0 and km.action({"e": 1}) == 2 and km.action({}) == 1
    assert km.action({"q": 1, "e": 2}) == 1
    cases = {"q = 0\nbogus_key = 1\n": r"line 2: unknown key 'bogus_key'",
             "q = 0\ne = 1\nq = 2\n": r"line 3: key 'q' is bound twice \(first on line 1\)",
             "m = 0\n": r"line 1: key 'm' is one of the app's own keys",
             "q = 7\n": r"line 1: action 7 is outside Discrete\(3\)",
             "q 0\n": r"line 1: expected KEY = ACTION"}
    for text, message in cases.items():
        bad = tmp_path / "bad.txt"
        bad.write_text(text)
        with pytest.raises(keymaps.KeymapError, match=message):
            keymaps.load(bad, discrete)
    box = {"type": "box", "shape": [2], "dtype": "float32", "low": -np.ones(2, np.float32),
           "high": np.ones(2, np.float32)}
    (tmp_path / "box.txt").write_text("w = 1+\ns = 1-\n")
    assert keymaps.load(tmp_path / "box.txt", box).action({"w": 1}) == pytest.approx([0, 1])
    (tmp_path / "box.txt").write_text("w = 2+\n")
    with pytest.raises(keymaps.KeymapError, match="dimension 2 is outside"):
        keymaps.load(tmp_path / "box.txt", box)
    with pytest.raises(keymaps.KeymapError, match="does not exist"):
        keymaps.load(tmp_path / "nope.txt", box)


# ----- views ------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCar-v0", "LunarLander-v3"])
def test_a_dream_is_drawn_the_way_its_env_draws_reality(env_id):
    """The adapter puts a render copy into the state an observation describes: drawing reality's
    own observation through it gives reality's own frame."""
    import gymnasium as gym

    if env_id.startswith("LunarLander"):
        pytest.importorskip("Box2D")
    env = gym.make(env_id, render_mode="rgb_array")
    obs, _ = env.reset(seed=3)
    env.action_space.seed(3)
    for _ in range(8):
        obs, *_ = env.step(env.action_space.sample() if not env_id.startswith("Lunar") else 0)
    if env_id == "Pendulum-v1":
        env.unwrapped.last_u = None  # its torque arrow shows the action, which no observation holds
    real = env.render().astype(np.int16)
    view = StateView(env_id, image=False)
    view.reset(3)
    drawn = view.frame(obs).astype(np.int16)
    env.close()
    view.close()
    assert drawn.shape == real.shape
    differ = (np.abs(drawn - real).max(-1) > 40).mean()
    assert differ < 0.002, f"{differ:.2%} of the pixels differ"
    # and a different observation gives a different picture
    other = np.asarray(obs, np.float64).copy()
    if env_id in ("Pendulum-v1", "Acrobot-v1"):  # (cos, sin) of an angle first
        other[:2] = [np.cos(np.arctan2(other[1], other[0]) + 2.0), np.sin(np.arctan2(other[1], other[0]) + 2.0)]
    else:
        other[0] += 0.5
    view = StateView(env_id, image=False)
    view.reset(3)
    assert (np.abs(view.frame(other).astype(np.int16) - real).max(-1) > 40).mean() > 0.002
    view.close()


def test_envs_without_an_adapter_are_plotted(app, monkeypatch):
    from worldssm.play import views

    monkeypatch.setattr(views, "ADAPTERS", {})
    assert StateView("CartPole-v1", image=False).plots
    app.view = StateView("CartPole-v1", image=False)
    for _ in range(6):
        app.tick()
    w, h = app.pane
    dream = app.pixels()[30:h - 5, w + 5:2 * w - 5]
    assert (np.abs(dream.astype(int) - np.array([16, 16, 22])).sum(-1) > 60).any(), "the plot drew nothing"


# ----- the app, driven by events ----------------------------------------------------------------
def test_a_held_key_drives_reality_and_the_dream(app):
    seen = sent_actions(app)
    press(app, "right")
    for _ in range(3):
        app.tick()
    press(app, "right", down=False)
    for _ in range(2):
        app.tick()
    assert [int(a[0]) for a in seen] == [1, 1, 1, 0, 0]
    assert app.session.tracks[0].since_sync == 5, "the dream stepped with reality"
    assert len(app.session.tracks[0].errors) == 5


def test_control_keys_switch_every_mode(app):
    s = app.session
    seen = sent_actions(app)
    views = []
    for _ in range(3):
        press(app, "v")
        app.tick()
        views.append(s.view)
    assert views == ["real", "dream", "both"]
    press(app, "m")
    app.tick()
    assert not s.human
    press(app, "p")
    app.tick()
    ticks = s.tick
    app.tick()
    assert s.paused and s.tick == ticks
    press(app, "n")
    app.tick()
    assert s.tick == ticks + 1, "one step while paused"
    press(app, "p")
    for name, resync in (("]", 1), ("]", 2), ("[", 1)):
        press(app, name)
        app.tick()
        assert s.resync == resync
    episode = s.episode
    press(app, "return")
    app.tick()
    assert s.episode == episode + 1
    press(app, "h")
    app.tick()
    assert not app.show_help
    press(app, "escape")
    app.tick()
    assert not app.running
    assert len(seen) >= 5


def test_the_dream_view_freezes_reality(app):
    s = app.session
    s.set_view("dream")
    real, dream = s.obs.copy(), s.tracks[0].obs.copy()
    seen = sent_actions(app)
    for _ in range(4):
        app.tick()
    assert np.array_equal(s.obs, real) and not seen
    assert not np.array_equal(s.tracks[0].obs, dream)


def test_fork_branches_a_second_dream_from_reality(app):
    s = app.session
    s.resync = 1
    for _ in range(3):
        app.tick()
    press(app, "f")
    app.tick()
    forks = [t for t in s.tracks if t.fork]
    assert len(forks) == 1 and len(s.tracks) == 2
    for _ in range(4):
        app.tick()
    if forks[0] in s.tracks:  # an episode that ended takes its forks with it
        assert forks[0].since_sync >= 4, "a fork runs free"
    main = [t for t in s.tracks if not t.fork][0]
    assert main.since_sync <= 1, "the main dream is set to reality every step"
    for _ in range(3):
        s.fork()
    assert len([t for t in s.tracks if t.fork]) == s.max_forks


def test_recording_writes_shards_that_train_takes(app, tmp_path):
    s = app.session
    seen = sent_actions(app)
    press(app, "r")
    press(app, "right")
    for _ in range(25):
        app.tick()
    press(app, "r")
    app.tick()
    assert not s.recording and s.recorded_shards
    data = RolloutDataset.load(tmp_path / "rec")
    steps = sum(len(e["obs"]) for e in data.episodes)
    assert steps == s.recorded_steps
    acted = np.concatenate([e["action"][~e["is_last"]] for e in data.episodes])
    assert np.array_equal(acted, np.concatenate(seen[:25])[: acted.size]) and acted.size == 25
    assert all(e["is_last"][-1] for e in data.episodes), "every recorded episode is complete"
    from worldssm.train import Trainer
    from worldssm.train.config import TrainConfig

    cfg = TrainConfig(preset="DEBUG", steps=1, batch_size=2, seq_len=4, log_every=1, checkpoint_every=1)
    Trainer(tmp_path / "rec", tmp_path / "run", cfg).run(progress=False)
    assert (tmp_path / "run" / "checkpoints" / "latest").exists()


def test_closing_the_window_mid_recording_leaves_a_complete_shard(tmp_path):
    app = open_app(fps=0, agent="random", record_dir=tmp_path / "rec")
    press(app, "r")
    for _ in range(6):
        app.tick()
    pygame.event.post(pygame.event.Event(pygame.QUIT))
    app.run(frames=1000)
    assert app.frames == 6, "the window closed at once"
    shards = sorted((tmp_path / "rec").glob("*.wsr"))
    assert shards and not [p for p in (tmp_path / "rec").iterdir() if p.suffix != ".wsr"], "no temp file left"
    data = RolloutDataset.load(tmp_path / "rec")
    last = data.episodes[-1]
    assert last["is_last"][-1] and not last["is_terminal"][-1], "the open episode ends truncated"
    assert sum(len(e["obs"]) for e in data.episodes) == app.session.recorded_steps


def test_swarm_click_takes_over_an_agent_and_dreams_beside_it(swarm_run, tmp_path):
    from worldssm.play.app import ARENA

    # re-synced every step: the 2-update model predicts the end at once, which freezes a free dream
    app = open_app(swarm_run, env_kwargs={"max_steps": 100}, agents=8, fps=0, record_dir=tmp_path, resync=1)
    try:
        s = app.session
        rows_ids = []
        seen = sent_actions(app, rows_ids)
        agent = int(s.ids[2])
        x, y = s.positions[2] / s.env.cfg.side * ARENA
        pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=(int(x), int(ARENA - y)), button=1))
        app.tick()
        assert s.controlled == agent
        press(app, "t")
        press(app, "right")
        start = None
        for _ in range(5):
            app.tick()
            if start is None:
                start = [t for t in s.tracks if t.agent == agent][0].pos.copy()
        row = int(np.flatnonzero(rows_ids[-1] == agent)[0])
        assert int(seen[-1][row]) == 4, "the keyboard drives the clicked agent (right = 4)"
        track = [t for t in s.tracks if t.agent == agent][0]
        assert len(track.errors) >= 3 and max(track.errors) > 0, "its dreamed position is compared with the real one"
        assert np.isfinite(start).all()
        press(app, "v")
        app.tick()
        press(app, "v")
        app.tick()
        assert s.view == "both", "swarm_v0 has no dream-only view"
        press(app, "t")
        app.tick()
        assert not [t for t in s.tracks if t.agent == agent]
    finally:
        app.close()


def test_the_bundled_model_plays_without_a_checkpoint():
    assert (BUNDLED / "model.safetensors").stat().st_size < 5 * 2**20
    sidecar = json.loads((BUNDLED / "checkpoint.json").read_text())
    assert "path" not in sidecar["data"] and sidecar["data"]["env_id"] == "CartPole-v1"
    app = open_app(fps=0, agent="random")
    try:
        for _ in range(5):
            app.tick()
        assert app.session.env_id == "CartPole-v1" and app.session.tick == 5
        errors = app.session.tracks[0].errors
        assert np.mean(errors) < 0.5, "the shipped model predicts CartPole"
    finally:
        app.close()


def test_the_agent_can_drive_from_the_start():
    """human=False: the agent drives from the first frame (a run with nobody at the keys is not a
    string of the keymap's 'no key' action), and `m` hands over as ever."""
    taken = {}
    for human in (True, False):
        app = open_app(fps=0, agent="pattern", human=human)
        try:
            step, seen = app.session.env.step, []

            def spy(actions, step=step, seen=seen):
                seen.append(int(np.asarray(actions).reshape(-1)[0]))
                return step(actions)

            app.session.env.step = spy
            for _ in range(12):
                app.tick()
            assert app.session.human is human
            taken[human] = set(seen)
        finally:
            app.close()
    assert taken[True] == {0}, "nobody at the keys: the keymap's no-key action, 0"
    assert len(taken[False]) > 1, "the pattern agent drives"


# ----- the command line -------------------------------------------------------------------------
def _cli_popen(*args, cwd=None):
    """`worldssm play ARGS` started headless, its output captured."""
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    return subprocess.Popen([sys.executable, "-m", "worldssm", "play", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cli(*args, cwd=None):
    proc = _cli_popen(*args, cwd=cwd)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_cli_plays_and_refuses_bad_input(tmp_path):
    out = _cli("--checkpoint", str(BUNDLED), "--fps", "0", "--frames", "5", "--agent", "random",
               "--screenshot", str(tmp_path / "shot.png"))
    assert out.returncode == 0, out.stderr
    assert "played 5 frames" in out.stdout and (tmp_path / "shot.png").stat().st_size > 1000
    assert "re-sync" in _cli("--help").stdout
    bad = tmp_path / "keys.txt"
    bad.write_text("left = 0\nleft = 1\n")
    cases = ((["--keymap", str(bad)], "line 2: key 'left' is bound twice"),
             (["--checkpoint", str(tmp_path / "missing")], "missing"),
             (["--env-kwargs", "{nope"], "--env-kwargs is not JSON"),
             (["--fps", "-1"], "--fps must be >= 0"),
             (["--agent", "clever"], "unknown agent 'clever'"),
             (["--env", "Pendulum-v1"], "space differs from the model's"))
    procs = [_cli_popen(*args, "--frames", "1") for args, _ in cases]  # side by side: each is mostly the interpreter's start
    for (args, message), proc in zip(cases, procs):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2 and message in err, (args, err)
        assert "Traceback" not in err


def test_a_missing_extra_is_named(monkeypatch):
    import gymnasium as gym

    from worldssm import envs
    from worldssm.errors import MissingDependencyError

    def refuse(*args, **kwargs):
        raise gym.error.DependencyNotInstalled("Box2D is not installed")

    monkeypatch.setattr(gym, "make", refuse)
    with pytest.raises(MissingDependencyError, match=r"pip install 'worldssm\[envs\]'"):
        envs.make("LunarLander-v3", api="batched", n_agents=1)


# ----- a real window ----------------------------------------------------------------------------
SHOT = """
import sys, numpy as np
from worldssm.play import open_app
app = open_app(fps=0, agent="random")
for _ in range(80):
    app.tick()
np.save(sys.argv[1], app.pixels())
app.screenshot(sys.argv[2])
import pygame
print("driver", pygame.display.get_driver(), "panes", app.pane[0], app.pane[1])
app.close()
"""


def test_a_real_window_under_xvfb_shows_both_panes(tmp_path):
    runner = shutil.which("xvfb-run")
    if runner is None:
        pytest.skip("xvfb-run is not installed (apt-get install xvfb); .ci/run installs it")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDL_")}
    out = subprocess.run([runner, "-a", "-s", "-screen 0 1400x900x24", sys.executable, "-c", SHOT,
                          str(tmp_path / "px.npy"), str(tmp_path / "shot.png")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "driver x11" in out.stdout, out.stdout
    px = np.load(tmp_path / "px.npy").astype(np.int16)
    w, h = (int(v) for v in out.stdout.split("panes")[1].split())
    real, dream = px[30:h - 4, 4:w - 4], px[30:h - 4, w + 4:2 * w - 4]
    for pane in (real, dream):
        assert (pane.min(-1) < 60).mean() > 0.002, "a cart is drawn (dark pixels on white)"
        assert (pane.min(-1) > 200).mean() > 0.5, "the env's white background is drawn"
    assert (np.abs(real - dream).max(-1) > 40).mean() > 0.0005, "after 80 free steps the dream differs"


# ----- pixels and the bench ---------------------------------------------------------------------
def test_a_pixel_game_is_played_in_the_same_window(tmp_path):
    """Pong at 64x64: both panes show frames scaled up; the arrows and space are the game's keys."""
    pytest.importorskip("ale_py")
    from worldssm.bench.play import _app

    app = _app("pixel", "cpu")
    try:
        s = app.session
        assert s.image and app.pane == (256, 256)
        seen = sent_actions(app)
        press(app, "right")
        press(app, "space")
        for _ in range(3):
            app.tick()
        assert [int(a[0]) for a in seen] == [4] * 3, "right + space is RIGHTFIRE"
        assert s.tracks[0].obs.shape == (64, 64, 3) and s.tracks[0].obs.dtype == np.uint8
        px = app.pixels()
        real, dream = px[30:250, 4:252], px[30:250, 260:508]
        assert real.std() > 5 and dream.std() > 1, "both frames are drawn"
    finally:
        app.close()


def test_bench_play_writes_fps(tmp_path):
    from worldssm.bench import play

    result = play.run(tmp_path, scenarios=("vector",), frames=20, warmup=2)
    saved = json.loads(Path(result["path"]).read_text())
    row = saved["rows"][0]
    assert row["frames"] == 20 and row["fps"] > 0 and row["p99_ms"] >= row["median_ms"] > 0
    assert row["model_step_p50_ms"] > 0 and saved["setup"]["fps_cap"] == 0


def test_swarm_with_image_observations_shows_the_agents_own_views(tmp_path):
    from worldssm.model import WorldModel, preset
    from worldssm.play.app import ARENA, VIEW
    from worldssm.envs import make
    from worldssm.spaces import space_to_dict

    probe = make("swarm_v0", api="batched", n_agents=4, obs_mode="image")
    spaces = space_to_dict(probe.single_observation_space), space_to_dict(probe.single_action_space)
    probe.close()
    import torch

    torch.manual_seed(0)
    model = WorldModel(preset("DEBUG"), *spaces).eval()
    with torch.no_grad():  # untrained: make it say "the episode goes on", so the dream keeps running
        model.cont_head[-1].bias.fill_(8.0)
    app = open_app(model, env="swarm_v0", env_kwargs={"obs_mode": "image"}, agents=6, fps=0, resync=1,
                   record_dir=tmp_path)
    try:
        s = app.session
        s.select(int(s.ids[0]))
        press(app, "t")
        for _ in range(4):
            app.tick()
        track = s.tracks[0]
        assert track.obs.shape == (32, 32, 3) and track.errors and 0 <= max(track.errors) <= 1
        px = app.pixels()
        view = px[30:30 + VIEW - 20, ARENA + 6:ARENA + VIEW - 6]
        assert view.std() > 3, "the agent's own view is drawn beside the arena"
    finally:
        app.close()


def test_recording_twice_in_one_session_stays_loadable(app, tmp_path):
    s = app.session
    for _ in range(2):
        press(app, "r")
        for _ in range(5):
            app.tick()
        press(app, "r")
        app.tick()
    data = RolloutDataset.load(tmp_path / "rec")
    assert len(data.episodes) == 2 and sum(len(e["obs"]) for e in data.episodes) == s.recorded_steps
    blocked = tmp_path / "file"
    blocked.write_text("x")
    s.record_dir = blocked / "sub"
    press(app, "r")
    app.tick()
    assert not s.recording and "cannot record into" in s.message, "a directory that cannot be made is said"

"""`worldssm play`: play inside a world model, beside reality, in a pygame window.

    from worldssm.play import open_app
    app = open_app()            # the CartPole-v1 model that ships with the package
    app.run()

`session.PlaySession` holds reality, the dreams, the switches and the recorder (no pygame);
`app.App` is the window; `keymap` turns held keys into actions; `views` draws observations the
way their env does.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED = Path(__file__).resolve().parent / "assets" / "cartpole"
BUNDLED_ENV = "CartPole-v1"


def open_app(checkpoint=None, env: str | None = None, env_kwargs: dict | None = None, agents: int | None = None,
             agent: str | None = None, others: str = "greedy", keymap=None, fps: int = 15, context: int = 16,
             resync: int = 0, max_forks: int = 2, record_dir=None, device: str = "cpu", seed: int = 0,
             planner="fast", human: bool = True):
    """Build the app (window open, nothing stepped yet).

    Args:
        checkpoint: a run or checkpoint directory, or a WorldModel; None: the bundled
            CartPole-v1 model.
        env: the env to play (default: the one the model was trained on).
        env_kwargs: the env's keyword arguments (swarm_v0's SwarmConfig fields, e.g. obs_mode).
        agents: swarm_v0's population (default 24); 1 for Gymnasium ids.
        agent: who drives when the human does not (default: "planner" for Gymnasium ids,
            "greedy" for swarm_v0).
        others: swarm_v0: the agent of the agents the human does not drive.
        keymap: a keymap file (default: derived from the action space).
        fps: frame cap (0: none).
        human: the human drives at the start; False: `agent` drives until `m` hands over.
        The rest: see `PlaySession`.
    """
    from worldssm.model import load_model
    from worldssm.play import keymap as keymaps
    from worldssm.play.app import App
    from worldssm.play.session import PlaySession

    from worldssm.model import WorldModel

    if isinstance(checkpoint, WorldModel):
        if env is None:
            raise ValueError("a WorldModel given as checkpoint needs env=")
        model = checkpoint.to(device).eval()
    else:
        model, sidecar = load_model(BUNDLED if checkpoint is None else checkpoint, device=device)
        env = env or (BUNDLED_ENV if checkpoint is None else sidecar["data"]["env_id"])
    swarm = env == "swarm_v0"
    agents = agents if agents is not None else (24 if swarm else 1)
    agent = agent or ("greedy" if swarm else "planner")
    session = PlaySession(model, env, env_kwargs=env_kwargs, agents=agents, agent=agent, others=others,
                          context=context, resync=resync, max_forks=max_forks, record_dir=record_dir,
                          device=device, seed=seed, planner=planner, human=human)
    try:
        meanings = _action_meanings(session.env)
        km = keymaps.load(keymap, session.act_space) if keymap else keymaps.derive(session.act_space, env, meanings)
        return App(session, km, fps=fps, title=f"worldssm play: {env}")
    except BaseException:
        session.close()
        raise


def _action_meanings(env):
    """Atari's action names (for the keymap), None for other envs."""
    copies = getattr(env, "envs", None)
    if not copies:
        return None
    get = getattr(copies[0].unwrapped, "get_action_meanings", None)
    return list(get()) if get is not None else None

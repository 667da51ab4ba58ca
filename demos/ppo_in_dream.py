"""Train a PPO policy entirely inside a dream of CartPole-v1, then test it in the real env.

    pip install stable-baselines3
    python demos/ppo_in_dream.py                      # train a model (about 8 min on 2 cores), PPO, test
    python demos/ppo_in_dream.py --run runs/cartpole  # with a model you trained

The world model is the only environment PPO ever sees: `ws.DreamVectorEnv` steps all its dreams
in one batched model call, restarting finished ones from real context. The dreams sample their
latents and endings (`sample=True`), as Dreamer's actor learns in imagination: on the round-2
CartPole-v1 model of `worldssm improve`, PPO trained in sampled dreams scored 500 in 10 of 10
real episodes, and 147 in dreams of the expected latent, which are smoother than reality. Uses only
the public API (`import worldssm as ws`) and stable-baselines3.
"""

from __future__ import annotations

import argparse

import numpy as np

import worldssm as ws
from common import ensure_model, model_flags


def sb3_vec_env(dreams: ws.DreamVectorEnv):
    """stable-baselines3's VecEnv over a DreamVectorEnv made with autoreset_mode="SameStep"."""
    from stable_baselines3.common.vec_env import VecEnv

    class DreamVec(VecEnv):
        def __init__(self):
            super().__init__(dreams.num_envs, dreams.single_observation_space, dreams.single_action_space)

        def reset(self):
            obs, _ = dreams.reset(seed=self._seeds[0])
            self._reset_seeds()
            return obs

        def step_async(self, actions):
            self._actions = actions

        def step_wait(self):
            obs, rew, term, trunc, info = dreams.step(self._actions)
            done = term | trunc
            infos = [{} for _ in range(self.num_envs)]
            for i in np.flatnonzero(done):  # ended dreams restarted within this step (SameStep)
                infos[i] = {"terminal_observation": info["final_obs"][i], "TimeLimit.truncated": bool(trunc[i])}
            return obs, rew.astype(np.float32), done, infos

        def close(self):
            dreams.close()

        def get_attr(self, name, indices=None):
            return [getattr(dreams, name)] * len(self._get_indices(indices))

        def set_attr(self, name, value, indices=None):
            raise AttributeError("the dreams share one model; set attributes on the DreamVectorEnv")

        def env_method(self, name, *args, indices=None, **kwargs):
            return [getattr(dreams, name)(*args, **kwargs)] * len(self._get_indices(indices))

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False] * len(self._get_indices(indices))

    return DreamVec()


class PolicyAgent:
    """A stable-baselines3 policy as a worldssm Agent: act(obs [A, ...], info) -> actions [A]."""

    def __init__(self, policy):
        self.policy = policy

    def act(self, obs, info):
        return self.policy.predict(obs, deterministic=True)[0]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    model_flags(parser, "runs/demo-cartpole", data_steps=2500, train_steps=3000)
    parser.add_argument("--dreams", type=int, default=16, help="dreams stepped side by side (default 16)")
    parser.add_argument("--ppo-steps", type=int, default=200_000, help="PPO env steps in the dream (default 200k)")
    parser.add_argument("--episodes", type=int, default=10, help="real CartPole-v1 test episodes (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    run = ensure_model("CartPole-v1", args)
    dreams = ws.DreamVectorEnv(run, num_envs=args.dreams, env="CartPole-v1", autoreset_mode="SameStep",
                                sample=True)
    n_steps = max(8, min(2048, args.ppo_steps) // args.dreams)  # steps per dream per PPO update
    ppo = PPO("MlpPolicy", sb3_vec_env(dreams), n_steps=n_steps, batch_size=min(256, n_steps * args.dreams),
              seed=args.seed, verbose=0)
    ppo.set_logger(Logger(folder=None, output_formats=[]))  # SB3's default logger makes a folder in /tmp
    print(f"PPO: {args.ppo_steps:,} steps in {args.dreams} dreams of {run}")
    ppo.learn(total_timesteps=args.ppo_steps, progress_bar=False)
    result = ws.run_episodes(PolicyAgent(ppo), "CartPole-v1", episodes=args.episodes, seed=args.seed)
    summary = result.summary()
    print(f"in the real CartPole-v1: returns {[round(r) for r in summary['returns']]}, "
          f"mean {summary['mean_return']:.0f} (random play: about 22; the maximum: 500)")
    return summary


if __name__ == "__main__":
    main()

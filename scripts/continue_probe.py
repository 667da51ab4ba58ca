"""Is the end of an episode in the world model's state? A probe for the fidelity issue's
continue F1 (LunarLanderContinuous-v3: 0.59).

    python scripts/continue_probe.py --run RUN --data DATA

The trained model observes every episode of its data from the start; a fresh copy of its continue
head is then trained on the training split's states h_t alone (the world model frozen) to say
whether the episode ends at t+1, with the end's loss weighted `--pos-weight` times, and scored on
the held-out split (`TrainConfig`'s split) beside the model's own head. If a head trained this way
on the states does no better on held-out episodes than the model's own, the states do not carry
the end, and no reweighting of the continue loss will find it. It also breaks the held-out ends
down by kind where the env is LunarLander (out of bounds: |x| >= 1 at the end; otherwise a crash).

`--features h+z` asks what a head that also reads the next step's latent would do, as DreamerV3's
continue head reads (h_t, z_{t+1}): a fresh head (the continue head's shape, wider input) is
trained on [h_t, z_{t+1}] with z_{t+1} the posterior of the real o_{t+1} (what training would
feed it), and scored on held-out episodes twice: with that posterior, and with the prior's
expected latent from h_t (what an imagined step would feed it).
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F


def states(model, episodes, latents: bool = False):
    """h_t [N, D] at every step t that has a next one, and whether t+1 ended the episode [N];
    with `latents`, also z_{t+1} [N, V*K] from the posterior of o_{t+1} and from the prior at t
    (expected latents)."""
    hs, ends, post, prior = [], [], [], []
    for e in episodes:
        n = len(e["reward"])
        if n < 2:
            continue
        first = torch.zeros(1, n, dtype=torch.bool)
        first[0, 0] = True
        with torch.no_grad():
            _, pred = model.observe_sequence(torch.as_tensor(e["obs"][None]), torch.as_tensor(e["action"][None]), first)
            if latents:
                post.append(model.latent(model.posterior(torch.as_tensor(e["obs"][1:]))).float())
                prior.append(pred.prior_logp[0, :-1].exp().flatten(1).float())
        hs.append(pred.h[0, :-1].float())
        ends.append(torch.as_tensor(e["is_terminal"][1:]).bool())
    if latents:
        return torch.cat(hs), torch.cat(ends), torch.cat(post), torch.cat(prior)
    return torch.cat(hs), torch.cat(ends)


def scores(pred: torch.Tensor, true: torch.Tensor) -> dict:
    """Precision, recall and F1 of the predicted ends, as the open-loop eval scores the continue head."""
    from worldssm.train.evaluate import _end_scores

    return _end_scores(pred.numpy(), true.numpy())


def probe(model, train, held, pos_weight: float, updates: int = 1500, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    (ht, yt), (hv, yv) = states(model, train), states(model, held)
    with torch.no_grad():
        own = torch.sigmoid(-model.cont_head(hv).squeeze(-1)) > 0.5  # the head gives "goes on"
    head = copy.deepcopy(model.cont_head)
    opt = torch.optim.Adam(head.parameters(), 1e-3)
    for _ in range(updates):
        idx = torch.randint(0, len(ht), (1024,))
        loss = F.binary_cross_entropy_with_logits(-head(ht[idx]).squeeze(-1), yt[idx].float(),
                                                  pos_weight=torch.tensor(pos_weight))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pt, pv = (torch.sigmoid(-head(h).squeeze(-1)) > 0.5 for h in (ht, hv))
    return {"pos_weight": pos_weight, "train_steps": len(ht), "train_ends": int(yt.sum()),
            "held_steps": len(hv), "held_ends": int(yv.sum()), "model_head_held": scores(own, yv),
            "probe_train": scores(pt, yt), "probe_held": scores(pv, yv)}


def probe_next_latent(model, train, held, pos_weight: float, updates: int = 1500, seed: int = 0) -> dict:
    """A fresh head on [h_t, z_{t+1}]: trained with the posterior z_{t+1}, scored held out with the
    posterior and with the prior's expected latent; its logit says "ends"."""
    from worldssm.model.nets import mlp

    torch.manual_seed(seed)
    ht, yt, zt, _ = states(model, train, latents=True)
    hv, yv, zv, zpv = states(model, held, latents=True)
    lins = [m for m in model.cont_head if isinstance(m, torch.nn.Linear)]
    head = mlp(ht.shape[1] + zt.shape[1], lins[0].out_features, len(lins) - 1, 1)
    opt = torch.optim.Adam(head.parameters(), 1e-3)
    xt = torch.cat([ht, zt], 1)
    for _ in range(updates):
        idx = torch.randint(0, len(xt), (1024,))
        loss = F.binary_cross_entropy_with_logits(head(xt[idx]).squeeze(-1), yt[idx].float(),
                                                  pos_weight=torch.tensor(pos_weight))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        said = {name: torch.sigmoid(head(torch.cat([h, z], 1)).squeeze(-1)) > 0.5
                for name, h, z in (("train", ht, zt), ("held_posterior", hv, zv), ("held_prior", hv, zpv))}
    return {"features": "h+z", "pos_weight": pos_weight, "train_steps": len(ht), "held_steps": len(hv),
            "held_ends": int(yv.sum()), "probe_train": scores(said["train"], yt),
            "probe_held_posterior_z": scores(said["held_posterior"], yv),
            "probe_held_prior_z": scores(said["held_prior"], yv)}


def end_kinds(model, episodes) -> dict:
    """LunarLander's held-out ends by kind (out of bounds: |x| >= 1 at the end; else a crash) and
    how many of each the model's own head caught (said "ends" at the step before)."""
    out: dict = {}
    for e in episodes:
        if len(e["reward"]) > 1 and e["is_terminal"][-1]:
            h, _ = states(model, [e])
            with torch.no_grad():
                caught = bool(torch.sigmoid(-model.cont_head(h[-1:])).item() > 0.5)
            kind = out.setdefault("out_of_bounds" if abs(float(e["obs"][-1, 0])) >= 1 else "crash",
                                  {"ends": 0, "caught": 0})
            kind["ends"] += 1
            kind["caught"] += int(caught)
    return out


def main() -> None:
    import worldssm as ws
    from worldssm.data import RolloutDataset
    from worldssm.train import TrainConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a trained run (worldssm train / bench fidelity --work)")
    p.add_argument("--data", required=True, help="the rollouts it was trained on")
    p.add_argument("--pos-weight", type=float, nargs="+", default=[1.0, 5.0, 20.0], help="weights of the end's loss")
    p.add_argument("--updates", type=int, default=1500, help="probe training updates (batches of 1,024 states)")
    p.add_argument("--features", choices=["h", "h+z"], default="h",
                   help="what the probe head reads: h_t (the model's own head's input), or also z_{t+1}")
    p.add_argument("--out", help="write the result as JSON here")
    a = p.parse_args()
    model = ws.load(a.run).eval()
    cfg = TrainConfig()
    train, held = RolloutDataset.load(a.data).split(cfg.val_fraction, cfg.seed)
    run = probe if a.features == "h" else probe_next_latent
    res = {"probes": [run(model, train.episodes, held.episodes, w, a.updates) for w in a.pos_weight]}
    if list(model.obs_space.get("shape", [])) == [8]:  # LunarLander's observation
        res["held_end_kinds"] = end_kinds(model, held.episodes)
    from worldssm.bench.env import record_script_result

    record_script_result(res, "continue_probe.py", a, a.out)


if __name__ == "__main__":
    main()

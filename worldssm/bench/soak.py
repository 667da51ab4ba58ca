"""Soak: a Simulation with thousands of agents joining and leaving for minutes, memory watched.

Run as `worldssm bench soak [--backend local|ray] [--agents 10000] [--seconds 600] [--kill]`.
Real swarm_v0 agents starve, leave and respawn on their own (a harsh swarm: little energy, a high
spawn rate); dream agents are added and removed by the driver every tick (`--churn` of them per
tick each way), so the roster, the slabs' free lists and the messages all turn over. Every
`--sample-s` seconds the resident memory (VmRSS) of the driver and of every actor process is
read from /proc, after each has returned its heap's free pages to the system (glibc's
malloc_trim; the untrimmed figure is recorded too): a tick allocates and frees large temporary
arrays, and freed heap pages stay resident until trimmed, which is not memory the run holds. After the warm-up (`--warmup-s`), the run passes when the total resident memory
at the end (the median of the last tenth of the samples) is within 5% (`tolerance`) of its
value just after the warm-up (the median of the first tenth), and no agent is lost: every
agent the Simulation saw is live or has a recorded reason for leaving (`agents_missing` is empty).
`--kill` (Ray only) sends SIGKILL (kill -9) to the process of an EnvActor a third of the way in and
of an EngineActor two thirds of the way in, and the run must recover from both. The JSON (`soak-<backend>-<time>.json`) records the
memory samples, ticks, agents and the verdict.
"""

from __future__ import annotations

import os
import platform
import signal
import time


HARSH = {"energy_init": 0.3, "spawn_prob": 0.2, "max_steps": 10**9}


def memory_kb(pid: int) -> dict[str, int]:
    """Resident memory of a process in KiB from one read of /proc/PID/status (zeros when it is
    gone): VmRSS (all), RssAnon (private heap and stacks) and RssShmem (shared memory it touched,
    such as Ray's object store, where Compiled Graph channels live)."""
    out = dict.fromkeys(MEMORY_FIELDS, 0)
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name = line.split(":", 1)[0]
                if name in out:
                    out[name] = int(line.split()[1])
    except OSError:
        pass
    return out


MEMORY_FIELDS = ("VmRSS", "RssAnon", "RssShmem")


def _config(backend: str, agents: int, seed: int):
    from worldssm.envs import make
    from worldssm.model import ModelSource
    from worldssm.sim import SimConfig
    from worldssm.spaces import space_to_dict

    env = make("swarm_v0", api="batched", n_agents=1)
    source = ModelSource.of_preset("DEBUG", space_to_dict(env.single_observation_space),
                                   space_to_dict(env.single_action_space), seed=seed)
    return SimConfig(model=source, env="swarm_v0", env_kwargs=HARSH, agents=agents, mode="mixed",
                     dream_fraction=0.5, env_actors=2, engine_actors=1, agent="greedy", dream_agent="random",
                     seed=seed, snapshot_every=50, backend=backend, timeout_s=120.0)


def _trim(sim) -> None:
    """malloc_trim in the driver and in every actor (see `shells.trim_memory`)."""
    from worldssm.sim.shells import trim_memory

    trim_memory()
    if sim.cfg.backend == "ray":
        actors = sim.env_actors + sim.engine_actors
        try:
            sim.ray.get([a.trim_memory.remote() for a in actors], timeout=60)
        except Exception:  # noqa: BLE001 - an actor killed a moment ago: it is being replaced
            pass


def _pids(sim) -> list[int]:
    if sim.cfg.backend == "local":
        return [os.getpid()]
    actors = sim.env_actors + sim.engine_actors
    return [os.getpid()] + [int(p) for p in sim.ray.get([a.pid.remote() for a in actors], timeout=60)]


def run(out_dir="tests/bench/results", backend: str = "local", agents: int = 10_000, seconds: float = 600.0,
        warmup_s: float | None = None, sample_s: float = 5.0, churn: int | None = None, tolerance: float = 0.05,
        kill: bool = False, seed: int = 0) -> dict:
    """Run the soak and write its JSON under `out_dir`; returns the result (see the module docstring)."""
    import numpy as np

    from worldssm.bench.env import git_sha, save_result
    from worldssm.sim import Simulation

    if kill and backend != "ray":
        raise ValueError("--kill needs the ray backend (the local backend has no actors to kill)")
    warmup_s = seconds / 5 if warmup_s is None else warmup_s
    churn = max(1, agents // 200) if churn is None else churn
    cfg = _config(backend, agents, seed)
    samples, kills = [], []
    with Simulation(cfg) as sim:
        pids = _pids(sim)
        t_start = time.perf_counter()  # the run is timed from here, after the actors started
        next_sample = t_start
        kill_at = [seconds / 3, 2 * seconds / 3] if kill else []
        rng = np.random.default_rng(seed)
        while True:
            now = time.perf_counter() - t_start
            if now >= next_sample - t_start:
                raw = {str(p): memory_kb(p)["VmRSS"] for p in pids}
                _trim(sim)  # what the heap holds free goes back first: live memory is what is judged
                mem = {str(p): memory_kb(p) for p in pids}
                per = {p: m["VmRSS"] for p, m in mem.items()}
                samples.append({"t_s": round(now, 2), "tick": sim.t, "agents": sim.roster.count(),
                                "rss_kb": sum(per.values()), "rss_untrimmed_kb": sum(raw.values()),
                                "per_process_kb": per, "pids": pids,
                                "rss_anon_kb": sum(m["RssAnon"] for m in mem.values()),
                                "rss_shmem_kb": sum(m["RssShmem"] for m in mem.values())})
                next_sample += sample_s
            if now >= seconds and not kill_at:  # (a slow recovery may delay a kill past the end: wait for it)
                break
            if kill_at and now >= kill_at[0]:
                # kill -9 of the actor's process: no Ray shutdown path runs, as when a machine
                # loses a process. pids: the driver, the EnvActors, then the EngineActors.
                victim = pids[1] if len(kill_at) == 2 else pids[1 + len(sim.env_actors)]
                os.kill(victim, signal.SIGKILL)
                kills.append({"t_s": round(now, 2), "tick": sim.t, "pid": victim, "signal": "SIGKILL",
                              "actor": "EnvActor 0" if len(kill_at) == 2
                              else "EngineActor 0"})
                kill_at.pop(0)
            dream = sim.roster.dream_live_after_queue(0)
            leaving = dream[rng.permutation(dream.size)[:churn]] if dream.size > churn else dream[:0]
            if leaving.size:
                sim.remove_agents(leaving)
                sim.add_agents(int(leaving.size))
            res = sim.tick()
            if res.recovered:
                pids = _pids(sim)
        summary = sim.summary()
    # Growth is judged on the trend, not on single samples: a tick allocates and frees large
    # temporary arrays, so one sample can sit 10-30% above or below its neighbours. The median of
    # the first tenth of the samples after the warm-up is compared with that of the last tenth.
    after = [s["rss_kb"] for s in samples if s["t_s"] >= warmup_s] or [samples[-1]["rss_kb"]]
    window = max(3, len(after) // 10)
    base = float(np.median(after[:window]))
    end = float(np.median(after[-window:]))
    peak = max(after)
    growth = (end - base) / base
    raw = [s["rss_untrimmed_kb"] for s in samples if s["t_s"] >= warmup_s] or [samples[-1]["rss_untrimmed_kb"]]
    raw_growth = (float(np.median(raw[-window:])) - float(np.median(raw[:window]))) / float(np.median(raw[:window]))
    ok = growth <= tolerance and not summary["agents_missing"] and (not kill or summary["recoveries"] == 2)
    result = {
        "bench": "soak", "git_sha": git_sha(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "backend": backend,
        "platform": platform.platform(), "cpus": os.cpu_count(),
        "setup": {"env": "swarm_v0", "env_kwargs": HARSH, "agents": agents, "mode": "mixed (half dream)",
                  "dream churn per tick": churn, "model": "DEBUG", "seconds": seconds, "warmup_s": warmup_s,
                  "sample_s": sample_s, "kill": kill},
        "ticks": summary["ticks"], "agents_seen": summary["agents_seen"], "agents_live": summary["agents_live"],
        "agents_missing": summary["agents_missing"], "recoveries": summary["recoveries"], "kills": kills,
        "ticks_lost_total": summary["ticks_lost_total"], "tick_ms": summary["latency_ms"],
        "rss_after_warmup_kb": base, "rss_at_end_kb": end, "rss_peak_after_warmup_kb": peak,
        "rss_window_samples": window, "rss_growth": growth, "rss_untrimmed_growth": raw_growth,
        "tolerance": tolerance, "passed": ok, "samples": samples,
    }
    save_result(result, out_dir, f"soak-{backend}")
    return result


def line(result: dict) -> str:
    return (f"soak {result['backend']}: {result['ticks']} ticks, {result['agents_seen']} agents seen, "
            f"{result['agents_live']} live, missing {len(result['agents_missing'])}, "
            f"recoveries {result['recoveries']}; RSS (median of {result['rss_window_samples']} samples) "
            f"{result['rss_after_warmup_kb'] / 1024:.0f} MiB after warm-up, {result['rss_at_end_kb'] / 1024:.0f} MiB "
            f"at the end ({100 * result['rss_growth']:+.1f}%, tolerance {100 * result['tolerance']:.0f}%), peak "
            f"{result['rss_peak_after_warmup_kb'] / 1024:.0f} MiB: {'passed' if result['passed'] else 'FAILED'}")

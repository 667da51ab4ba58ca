"""Markdown performance tables made from the recorded benchmark JSON in tests/bench/results/.

`python -m worldssm.bench.report` prints the tables that README.md carries between its
`<!-- bench:begin -->` and `<!-- bench:end -->` markers (a test keeps the two in sync);
`--write README.md` updates them in place.
"""

from __future__ import annotations

import json
from statistics import median
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "tests" / "bench" / "results"


def _load(pattern: str, results: Path) -> list[tuple[str, dict]]:
    return [(p.name, json.loads(p.read_text())) for p in sorted(results.glob(pattern))]


def _newest(pattern: str, results: Path):
    files = _load(pattern, results)
    return files[-1] if files else (None, None)


def _fmt(v, nd=1):
    return "—" if v is None else f"{v:,.{nd}f}"


def step_table(name: str, d: dict) -> list[str]:
    env = d["env"]
    rows = {(r["arm"], r["batch"]): r for r in d["rows"]}
    split = any(r["arm"] == "fused split+graph" for r in d["rows"])
    # files older than the "auto_rule" key were recorded under the rule of their day
    rule = d.get("auto_rule", "the layer path up to 64 agents, v1 above")
    out = [f"Backbone step, {env['device']} ({name}, git {env['git_sha'][:7]}, torch {env['torch']}, "
           f"triton {env['triton']}): BASE shape, bf16 weights, fp32 state, median / p99 of CUDA-graph replays. "
           f"`fused + graph` is the default path (`auto`: {rule}); the "
           f"{'layer, v1 and split' if split else 'layer and v1'} columns force one path at every batch.",
           "", "| B | fused + graph (us) | layer path (us) | v1 path (us) | " + ("split path (us) | " if split else "")
           + "byte bound (us) | fraction of bound | "
           "reference + graph (us) | reference, compile + graph (us) | plain PyTorch, compile + graph (us) | "
           "fused vs best compiled | whole world model, fused (us) |",
           "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if split else "")]
    for b in sorted({r["batch"] for r in d["rows"]}):
        f = rows.get(("fused+graph", b), {})
        lay = rows.get(("fused layer+graph", b), {})
        v1 = rows.get(("fused v1+graph", b), {})
        sp = f"{_fmt(rows.get(('fused split+graph', b), {}).get('median_us'))} | " if split else ""
        g = rows.get(("reference+graph", b), {})
        c = rows.get(("reference+compile+graph", b), {})
        pc = rows.get(("plain+compile+graph", b), {})
        w = rows.get(("world_model fused+graph", b), {})
        ratios = [f.get(k) for k in ("speedup_vs_compile_graph", "speedup_vs_plain_compile_graph") if f.get(k)]
        out.append(f"| {b:,} | {_fmt(f.get('median_us'))} / {_fmt(f.get('p99_us'))} | {_fmt(lay.get('median_us'))} | "
                   f"{_fmt(v1.get('median_us'))} | {sp}{_fmt(f.get('bound_us'))} | "
                   f"{_fmt(f.get('fraction_of_bound'), 2)} | {_fmt(g.get('median_us'))} | {_fmt(c.get('median_us'))} | "
                   f"{_fmt(pc.get('median_us'))} | {_fmt(min(ratios) if ratios else None, 2)}x | "
                   f"{_fmt(w.get('median_us'))}{_frac(w)} |")
    return out


def _frac(row: dict) -> str:
    return f" ({row['fraction_of_bound']:.2f} of its byte bound)" if "fraction_of_bound" in row else ""


def _backbone_rows(d: dict) -> list[dict]:
    return [r for r in d["rows"] if r.get("backbone") not in (None, "mamba2")]


def backbone_table(name: str, d: dict) -> list[str]:
    """The whole world-model step per backbone (a `bench step --backbones` file)."""
    env = d["env"]
    out = [f"The whole world-model step with each backbone ({env['device']}, {name}, git {env['git_sha'][:7]}; same "
           "heads; GRU and Transformer-KV in PyTorch under a CUDA graph, Mamba-2 fused):", "",
           "| backbone | B | median / p99 (us) | agent-steps/s | state bytes per agent | Mamba-2 faster by |",
           "|---|---|---|---|---|---|"]
    ratio = {(r["baseline"], r["batch"]): r["throughput_ratio"] for r in d.get("backbone_ratios", [])}
    for r in [x for x in d["rows"] if x["arm"] == "world_model fused+graph"] + _backbone_rows(d):
        label = "Mamba-2" if r.get("backbone") in (None, "mamba2") else r["arm"].replace("world_model ", "").replace(
            " reference+graph", "")
        per = r.get("state_bytes_per_agent")
        if "median_us" not in r:
            out.append(f"| {label} | {r['batch']:,} | {r.get('error', '?')[:70]} | | {_fmt(per, 0)} | |")
            continue
        speed = ratio.get((r["arm"], r["batch"]))
        out.append(f"| {label} | {r['batch']:,} | {_fmt(r['median_us'])} / {_fmt(r['p99_us'])} | "
                   f"{r['batch'] / (r['median_us'] * 1e-6):,.0f} | {_fmt(per, 0)} | "
                   f"{'' if speed is None else f'{speed:.1f}x'} |")
    return out


def scan_table(name: str, d: dict) -> list[str]:
    env = d["env"]
    out = [f"Training scan forward + backward, {env['device']} ({name}, git {env['git_sha'][:7]}):", "",
           "| path | B | T | median (ms) | p99 (ms) | tokens/s | vs sequential |", "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        out.append(f"| {r['arm']} | {r['batch']} | {r['T']:,} | {_fmt(r['median_ms'], 2)} | {_fmt(r['p99_ms'], 2)} | "
                   f"{r['tokens_per_s'] / 1e6:.2f} M | {_fmt(r.get('speedup_vs_sequential'), 1)}x |")
    return out


def env_table(name: str, d: dict) -> list[str]:
    load = ", ".join(f"{x:.2f}" for x in d.get("load_average", []))
    out = [f"swarm_v0 env step on one CPU core ({name}, git {d['git_sha'][:7]}, load average {load}):", "",
           "| agents | observations | median step (ms) | p99 step (ms) | agent-steps/s |", "|---|---|---|---|---|"]
    for c in d["configs"]:
        out.append(f"| {c['n_agents']:,} | {c['obs_mode']} {tuple(c['obs_shape'])} | {c['median_step_s'] * 1e3:.3f} | "
                   f"{c['p99_step_s'] * 1e3:.3f} | {c['agent_steps_per_s']:,.0f} |")
    return out


def tick_table(name: str, d: dict) -> list[str]:
    load = ", ".join(f"{x:.2f}" for x in d.get("load_avg_before", []))
    out = [f"Ray tick, 2 EnvActors + 1 EngineActor, DEBUG model, {d.get('cpus')} CPUs ({name}, git "
           f"{d['git_sha'][:7]}, load average before {load}):", "",
           "| agents | path | p50 / p99 tick (ms) | env (ms) | engine (ms) | work on the longest chain (ms) "
           "| Ray overhead p50 (ms) | agent-steps/s | speedup |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in d["results"]:
        for path in ("compiled", "plain"):
            x = r[path]
            work = f"{x['work_ms_p50']:.2f}" if "work_ms_p50" in x else "-"
            speed = f"{r['speedup_compiled_vs_plain']:.2f}x" if path == "compiled" else ""
            out.append(f"| {r['agents']:,} | {'Compiled Graph' if path == 'compiled' else 'plain calls'} | "
                       f"{x['latency_ms']['p50']:.2f} / {x['latency_ms']['p99']:.2f} | {x['env_ms_p50']:.2f} | "
                       f"{x['engine_ms_p50']:.2f} | {work} | {x['overhead_ms']['p50']:.2f} | "
                       f"{x['agent_steps_per_s']:,.0f} | {speed} |")
    rounds = [r for r in d["results"] if "p50_ms_rounds" in r["compiled"]]
    if rounds:
        out += ["", f"Each row is the median of {len(rounds[0]['compiled']['p50_ms_rounds'])} rounds on fresh "
                "actors; p50 (ms) by round, Compiled Graph / plain calls: " + "; ".join(
                    f"{r['agents']:,} agents " + ", ".join(f"{x:.2f}" for x in r["compiled"]["p50_ms_rounds"])
                    + " / " + ", ".join(f"{x:.2f}" for x in r["plain"]["p50_ms_rounds"]) for r in rounds) + "."]
    if d.get("engine_observe_ms"):
        out += ["", "The engine's step on one CPU thread (same file): median `Engine.observe` time.", "",
                "| agents | numpy step (ms) | PyTorch step (ms) | speedup |", "|---|---|---|---|"]
        for r in d["engine_observe_ms"]:
            out.append(f"| {r['agents']:,} | {r['numpy_ms']:.3f} | {r['torch_ms']:.3f} | "
                       f"{r['torch_ms'] / r['numpy_ms']:.2f}x |")
    return out


def fidelity_table(files: list[tuple[str, dict]]) -> list[str]:
    """One row per env and backbone, each from the newest result file that holds it: open-loop
    error at horizons 1, 8 and 32 against repeat-last, the reward error at horizon 1 against the
    mean predictor, the continue head's F1."""
    newest: dict[tuple[str, str], tuple[str, dict, dict]] = {}
    for name, d in files:  # oldest first: later files replace an (env, backbone) record
        for env, rec in d["envs"].items():
            for backbone in rec["backbones"]:
                newest[env, backbone] = (name, d, rec)
    sources = sorted({(name, d["git_sha"][:7], d["device"]) for name, d, _ in newest.values()})
    out = ["World-model fidelity (" + "; ".join(f"{n}, git {g}, {dev}" for n, g, dev in sources) +
           "; the seed of each env is in its JSON): normalised open-loop observation error on held-out episodes "
           "after 16 steps of context, model / repeat-last.", "",
           "| env | backbone | preset, updates | k=1 | k=8 | k=32 | reward error k=1, model / mean | "
           "continue F1 | training (s) |", "|---|---|---|---|---|---|---|---|---|"]
    envs = list(dict.fromkeys(env for env, _ in newest))
    order = {"mamba2": 0, "gru": 1, "transformer": 2}
    marked = False
    notes: dict[str, str] = {}
    for env, backbone in sorted(newest, key=lambda k: (envs.index(k[0]), order.get(k[1], 9))):
        name, d, rec = newest[env, backbone]
        if d.get("note"):
            notes[name] = d["note"]
        r = rec["backbones"][backbone]
        e = r["eval"]
        hs, m, rep = e["horizons"], e["obs_nmse"]["model"], e["obs_nmse"]["repeat_last"]

        def at(k, hs=hs, m=m, rep=rep):
            if k not in hs or m[hs.index(k)] is None:
                return "—"
            i = hs.index(k)
            return f"{m[i]:.4g} / {rep[i]:.4g}"
        rew = e["reward_mae"]
        f1 = r["targets"].get("continue_f1")
        # Before continue scores covered whole episodes they counted the ends inside the windows'
        # context only (a few dozen per env): such an F1 is marked.
        old_f1 = f1 is not None and e["continue"].get("over") != "episodes"
        marked = marked or old_f1
        rec_w = r.get("loss_rec", 1.0)  # recorded since SMALL weighs reconstruction 10; before, 1
        con_w = r.get("loss_con", 1.0)  # recorded since SMALL weighs the continue flag 5; before, 1
        weight = ("" if rec_w == 1.0 else f", reconstruction x{rec_w:g}") + ("" if con_w == 1.0 else f", continue x{con_w:g}")
        out.append(f"| {env} | {backbone} | {rec['preset']}, {rec['train_steps']:,}{weight} | {at(1)} | {at(8)} | {at(32)} | "
                   f"{_fmt(rew['model'][0], 3)} / {_fmt(rew['mean'][0], 3)} | "
                   f"{'—' if f1 is None else f'{f1:.3f}'}{'*' if old_f1 else ''} | {r['train_seconds']:.0f}"
                   f"{'†' if name in notes else ''} |")
    if marked:
        out += ["", "\\* continue F1 over the few ends inside the open-loop windows' 16 context steps (the "
                "evaluation of its day); the others count every end of every held-out episode."]
    out += [""] + [f"† {name}: {note}" for name, note in sorted(notes.items())] if notes else []
    return out


def _source(name: str, d: dict) -> str:
    """"(FILE, git SHA, load average before A, B, C)" of a CPU result."""
    load = ", ".join(f"{x:.2f}" for x in d["load_avg_before"])
    return f"({name}, git {(d['git_sha'] or '')[:7]}, load average before {load})"


def play_table(name: str, d: dict) -> list[str]:
    """`worldssm bench play`: frames per second of play's whole loop, headless, no frame cap."""
    out = [f"`worldssm play`'s whole loop (events, real env step, model step with decoding, drawing), headless, "
           f"no frame cap, {d['device']}, {d['cpus']} CPUs {_source(name, d)}:", "",
           "| scenario | env | model | frames/s | frame median / p99 (ms) | model step p50 / p99 (ms) |",
           "|---|---|---|---|---|---|"]
    model = {"vector": d["setup"]["vector_model"], "pixel": f"{d['setup']['preset_pixel']}, untrained weights"}
    for r in d["rows"]:
        out.append(f"| {r['scenario']} | {r['env']} | {model[r['scenario']]} | {r['fps']:.0f} | "
                   f"{r['median_ms']:.2f} / {r['p99_ms']:.2f} | {r['model_step_p50_ms']:.2f} / {r['model_step_p99_ms']:.2f} |")
    return out


def serve_table(name: str, d: dict) -> list[str]:
    """`worldssm bench serve`: a remote agent's round trip, and ticks/s with many client processes."""
    out = [f"Remote agents over TCP loopback, {d['setup']['env']}, {d['cpus']} CPUs {_source(name, d)}: one client's "
           "`step` round trip, and the tick rate when every tick waits for N client processes.", "",
           "| agents of one client | round trip p50 / p99 (ms) | server tick p50 (ms) | agent-steps/s |",
           "|---|---|---|---|"]
    for r in d["round_trip"]:
        out.append(f"| {r['agents']:,} | {r['p50_ms']:.3f} / {r['p99_ms']:.3f} | {r['server_tick_p50_ms']:.3f} | "
                   f"{r['agent_steps_per_s']:,.0f} |")
    out += ["", "| client processes (1 agent each) | ticks/s | agent-steps/s | tick slowdown vs 1 client |",
            "|---|---|---|---|"]
    for r in d["clients"]:
        out.append(f"| {r['clients']} | {r['ticks_per_s']:,.0f} | {r['agent_steps_per_s']:,.0f} | "
                   f"{r['slowdown_vs_first']:.1f}x |")
    return out


def tick_cuda_table(name: str, d: dict) -> list[str]:
    st = d["setup"]
    out = [f"The tick on the GPU host ({name}, git {d['git_sha'][:7]}, {d['device']}, {d['cpus']} CPUs): "
           f"{st['model']} EngineActor on the GPU ({st.get('state_dtype', 'float32')} SSM states), "
           f"{st['env_actors']} EnvActors on CPU cores, swarm_v0; "
           "the local backend runs the same actors' code in one process, without Ray.", "",
           "| scenario | path | p50 / p99 tick (ms) | env (ms) | engine (ms) | of which model (ms) | overhead p50 (ms) "
           "| agent-steps/s |", "|---|---|---|---|---|---|---|---|"]
    names = {"compiled": "Compiled Graph", "plain": "plain calls", "local": "local (no Ray)"}
    for r in d["results"]:
        for path, label in names.items():
            x = r.get(path, {})
            if "error" in x or not x:
                err = x.get("error", "not run").splitlines()[0]
                out.append(f"| {r['scenario']} | {label} | error: {err[:100]} "
                           "| | | | | |")
                continue
            out.append(f"| {r['scenario']} | {label} | {x['latency_ms']['p50']:.2f} / {x['latency_ms']['p99']:.2f} | "
                       f"{x['env_ms_p50']:.2f} | {x['engine_ms_p50']:.2f} | {x['model_ms_p50']:.2f} | "
                       f"{x['overhead_ms']['p50']:.2f} | {x['agent_steps_per_s']:,.0f} |")
    return out


def dream_table(name: str, d: dict) -> list[str]:
    st = d["setup"]
    states = st.get("state_dtype", "float32")
    per_env = d["rows"][0].get("state_bytes_per_env") if d["rows"] else None
    floor = d.get("arithmetic_floor")  # CPU: the matrix-product rate bounds the step (bench.dream.arithmetic_floor)
    out = [f"`DreamVectorEnv` on {d['device']} ({name}, git {(d.get('git_sha') or '?')[:7]}, {st['model']} model, "
           f"{st['spaces']} spaces, {states} SSM states{f', {per_env:,} state bytes per env' if per_env else ''}):",
           "", "| envs | step median / p99 (ms) | env-steps/s |"
           + (" float32 products alone (ms) | ceiling (env-steps/s) |" if floor else ""),
           "|---|---|---|" + ("---|---|" if floor else "")]
    for r in d["rows"]:
        line = f"| {r['envs']:,} | {r['median_ms']:.2f} / {r['p99_ms']:.2f} | {r['env_steps_per_s']:,.0f} |"
        if floor:
            line += f" {r['floor_ms']:.2f} | {r['envs'] / (r['floor_ms'] / 1e3):,.0f} |"
        out.append(line)
    if floor:
        g = floor["gemm_gflops"]
        out += ["", f"A step's matrix products: {floor['flops_per_env_step'] / 1e6:.2f} MFLOP per env; this machine's "
                f"best rate at the step's shapes {g['float32']:.0f} GFLOP/s in float32 ({g['bfloat16']:.0f} in "
                f"bfloat16), so no float32 step of this model passes the ceiling column."]
    drift = d.get("drift")
    if drift:
        s, w, k = drift["state_bf16"], drift["weights"], str(drift["steps"])
        out += ["", f"Drift over {drift['steps']:,} imagined steps ({drift['dreams']} dreams, same weights and actions; "
                "observation error in standard deviations of the data): bfloat16 against float32 SSM states "
                f"{s['at_step']['1']['obs_mean']:.4f} at step 1, {s['at_step'][k]['obs_mean']:.3f} at step {k} "
                f"(reward {s['at_step']['1']['reward_mean']:.4f} / {s['at_step'][k]['reward_mean']:.2f}); for scale, "
                f"the bfloat16 backbone weights the engine uses by default against float32 weights: "
                f"{w['at_step']['1']['obs_mean']:.4f} / {w['at_step'][k]['obs_mean']:.3f} "
                f"(reward {w['at_step']['1']['reward_mean']:.4f} / {w['at_step'][k]['reward_mean']:.2f})."]
    return out


def _at_max(env: str, returns) -> str:
    """"k of n" episodes at CartPole's maximum return of 500 ("" for other envs)."""
    return f"{sum(1 for r in returns if r >= 500)} of {len(returns)}" if env.startswith("CartPole") else ""


def _file(name: str, d: dict) -> str:
    """A result file's name, and its note where it has one."""
    return f"{name}: {d['note']}" if d.get("note") else name


def _planner(name: str, c: dict) -> str:
    return f"{name} ({c['samples']}, {c['horizon']}, {c['iterations']})"


def plan_tables(files: list[tuple[str, dict]]) -> list[str]:
    out = ["Planners acting in the real env (10 seeded episodes side by side; decision latency for all 10 agents):",
           "", "| env | device | planner (S, H, I) | mean return | episodes at the maximum | decision p50 / p99 (ms) "
           "| imagined agent-steps/s | planning overhead | file |", "|---|---|---|---|---|---|---|---|---|"]
    for name, d in files:
        out.append(f"| {d['env']} | {d.get('device_name', d['device'])} | {_planner(d['planner'], d['planner_config'])} | "
                   f"{d['mean_return']:.1f} | {_at_max(d['env'], d['returns'])} | "
                   f"{d['decision_ms_p50']:.0f} / {d['decision_ms_p99']:.0f} | {d['imagined_steps_per_s']:,.0f} | "
                   f"{100 * d['planning_overhead']:.0f}% | {_file(name, d)} |")
    return out


def improve_tables(files: list[tuple[str, dict]]) -> list[str]:
    out = ["`worldssm improve` from nothing (random-policy data, then one round of planner-played episodes per "
           "round; each round trains a fresh model on all data so far and its planner plays 10 seeded episodes):",
           "", "| env | preset, updates | mean_rows | seed | planner (S, H, I) | mean return by round | episodes at the "
           "maximum by round | final test on fresh seeds: round chosen, mean return (at the maximum) | "
           "ms per decision (10 agents) | file |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, d in files:
        c, scores = d["config"], d["scores"]
        if not scores:
            continue
        top = ", ".join(_at_max(c["env"], s["returns"]) for s in scores) if c["env"].startswith("CartPole") else ""
        means = ", ".join(f"{s['mean_return']:.1f}" for s in scores)
        ms = ", ".join(f"{s['mean_decision_ms']:.0f}" for s in scores)
        f = d.get("final")
        final = "not run (file predates it)" if f is None else (
            f"round {f['round']}, {f['mean_return']:.1f}"
            + (f" ({_at_max(c['env'], f['returns'])})" if c["env"].startswith("CartPole") else ""))
        con = "" if c.get("loss_con") is None else f", continue x{c['loss_con']:g}"  # recorded since the flag
        value = "" if not c.get("value") else (" + value" if c.get("value_from", "returns") == "returns"
                                               else " + value in dreams")
        out.append(f"| {c['env']} | {c['preset']}, {c['train_steps']:,}{con} | {c.get('mean_rows') or 0} | {c['seed']} | "
                   f"{_planner(scores[0]['planner'], scores[0]['planner_config'])}"
                   f"{value} | {means} | {top} | {final} | "
                   f"{ms} | {_file(name, d)} |")
    return out


def soak_tables(files: list[tuple[str, dict]]) -> list[str]:
    out = ["Soak: a Simulation with agents joining and leaving (swarm_v0, half dream, DEBUG model), resident memory "
           "of every process after warm-up against the end (medians of the first and last tenth of the samples):",
           "", "| backend | agents | minutes | kills (SIGKILL) | ticks | agents seen | missing | RSS after warm-up → "
           "end (MiB) | growth | of which private (RssAnon) / shared (RssShmem) growth | verdict | file |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, d in files:
        st = d["setup"]
        kills = ", ".join(k["actor"] for k in d["kills"]) or "none"
        split = "—"
        after = [x for x in d["samples"] if x["t_s"] >= st["warmup_s"] and "rss_anon_kb" in x]
        if after:
            w = d["rss_window_samples"]
            grow = [(median([x[k] for x in after[-w:]]) - median([x[k] for x in after[:w]])) / 1024
                    for k in ("rss_anon_kb", "rss_shmem_kb")]
            split = f"{grow[0]:+,.0f} / {grow[1]:+,.0f} MiB"
        out.append(f"| {d['backend']} | {st['agents']:,} | {st['seconds'] / 60:.1f} | {kills} | {d['ticks']:,} | "
                   f"{d['agents_seen']:,} | {len(d['agents_missing'])} | {d['rss_after_warmup_kb'] / 1024:,.0f} → "
                   f"{d['rss_at_end_kb'] / 1024:,.0f} | {100 * d['rss_growth']:+.1f}% | {split} | "
                   f"{'passed' if d['passed'] else 'failed'} | {name} |")
    return out


def report(results: Path = RESULTS) -> str:
    parts: list[list[str]] = []
    many = {"fidelity-*.json": fidelity_table, "plan-*.json": plan_tables, "improve-*.json": improve_tables,
            "soak-*.json": soak_tables}
    for pattern, table in (("step-nvidia-*.json", step_table), ("scan-nvidia-h200*.json", scan_table),
                           ("env-*.json", env_table), ("tick-2*.json", tick_table), ("tick-cuda-*.json", tick_cuda_table),
                           ("fidelity-*.json", None), ("plan-*.json", None), ("improve-*.json", None),
                           ("dream-cpu-*.json", dream_table),
                           ("dream-cuda-*.json", dream_table), ("play-cpu-*.json", play_table),
                           ("play-cuda-*.json", play_table), ("serve-*.json", serve_table), ("soak-*.json", None)):
        if table is None:
            files = _load(pattern, results)
            if files:
                parts.append(many[pattern](files))
            continue
        if pattern == "dream-cuda-*.json":  # the newest of each card and state dtype: H100 and H200 rows differ
            newest = {(d["device"], d["setup"].get("state_dtype", "float32")): (name, d)
                      for name, d in _load(pattern, results)}
            parts.extend(table(name, d) for name, d in newest.values())
            continue
        if table is step_table:  # one file per card (`bench step` names it by the card), newest first
            cards = [(name, d) for name, d in _load(pattern, results) if not _backbone_rows(d)]
            parts.extend(table(name, d) for name, d in sorted(cards, key=lambda nd: nd[1]["env"]["time"], reverse=True))
        else:
            name, d = _newest(pattern, results)
            if d is not None:
                parts.append(table(name, d))
        if table is step_table:  # the backbones side by side: the newest file that has them
            with_backbones = [(n, x) for n, x in _load(pattern, results) if _backbone_rows(x)]
            if with_backbones:
                parts.append(backbone_table(*with_backbones[-1]))
    return "\n\n".join("\n".join(p) for p in parts) + "\n"


def write_readme(path: Path) -> None:
    """Replace the tables between the README's bench markers with the current report."""
    import re

    text = path.read_text()
    if "<!-- bench:begin -->" not in text:
        raise SystemExit(f"{path} has no <!-- bench:begin --> marker")
    new = re.sub(r"<!-- bench:begin -->\n.*?<!-- bench:end -->",
                 lambda _: "<!-- bench:begin -->\n" + report() + "<!-- bench:end -->", text, flags=re.S)
    path.write_text(new)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", metavar="README", help="update this README's tables instead of printing")
    args = parser.parse_args(argv)
    if args.write:
        write_readme(Path(args.write))
    else:
        sys.stdout.write(report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Play inside a world model beside reality, from Python (what `worldssm play` runs).

    python demos/play.py                                  # the CartPole-v1 model shipped with worldssm
    python demos/play.py --run runs/pendulum --resync 20  # your model, its dream set to reality every 20 steps
    python demos/play.py --frames 300 --record            # stop after 300 frames; the episodes go to shards

In the window: arrows (or the keys it lists) act, m hands over to the planner, f forks a dream
from reality, v switches the view, r records, h hides the help. Uses only the public API.
"""

from __future__ import annotations

import argparse

import worldssm as ws


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--run", default=None, help="a run directory (default: the bundled CartPole-v1 model)")
    parser.add_argument("--env", default=None, help="the env to play (default: the model's)")
    parser.add_argument("--fps", type=int, default=15, help="frame cap (0: none)")
    parser.add_argument("--resync", type=int, default=0, help="set the dream to reality every K steps (0: free)")
    parser.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--record", action="store_true", help="record from the first frame")
    parser.add_argument("--record-dir", default="recordings", help="where recordings go")
    parser.add_argument("--agent", action="store_true", help="let the planner drive from the start")
    args = parser.parse_args(argv)

    app = ws.open_play(args.run, env=args.env, fps=args.fps, resync=args.resync, record_dir=args.record_dir)
    session = app.session
    if args.record:
        session.toggle_record()
    session.human = not args.agent
    app.run(frames=args.frames)  # writes the recording when the window closes, however it closes
    errors = [e for t in session.tracks for e in t.errors]
    summary = {"frames": app.frames, "fps": round(app.measured_fps, 1), "episodes": session.episode,
               "recorded": [str(p) for p in session.recorded_shards],
               "mean_dream_error": float(sum(errors) / len(errors)) if errors else None}
    print(f"played {summary['frames']} frames at {summary['fps']} fps over {summary['episodes']} episodes; "
          f"dream error {summary['mean_dream_error']}")
    for path in summary["recorded"]:
        print(f"recorded {path} (worldssm train --data {args.record_dir} takes it)")
    return summary


if __name__ == "__main__":
    main()

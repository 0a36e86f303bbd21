"""Does the model use the embedding? Measures on held-out people (issue: "G ignores e").

For a checkpoint and a preprocessed dataset of people it never saw, prints one JSON line per figure:

* ``embedding_spread``: mean absolute difference between the embeddings ``e`` of different people
  (K shots each) against that between two disjoint K-shot sets of the same video (the ratio says
  whether E tells people apart at all);
* ``psi``: ``P e`` against the AdaIN identity (scale 1, bias 0): mean absolute deviation, the
  standard deviation across people, and P's largest singular value;
* ``output_sensitivity``: mean absolute pixel change (0-255) of G's output when only ``e`` changes
  (same landmarks and, for the warp-guided G, the same source shots; another person's embedding)
  against when only the landmarks change (same person);
* ``l_mch`` (with ``--run``): ``Loss/G/mch`` and ``Loss/D/mch`` over a run's ``stats.jsonl``.

Usage::

    python bench/embedding_probe.py weights/demo data/heldout --k 4 [--run runs/00000-warp-128-k4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from headpuppet.data.format import open_dataset
from headpuppet.fewshot.animator import Animator


def line(name: str, **fields) -> None:
    print(json.dumps({"figure": name, **fields}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("data", help="a preprocessed dataset of held-out people")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--run", help="a run folder whose stats.jsonl shows the L_MCH dynamics")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    animator = Animator.from_checkpoint(args.checkpoint)
    data = open_dataset(args.data).resized(animator.size)
    # one video per person, the longest
    by_person: dict[str, object] = {}
    for v in data.videos:
        if v.num_frames >= 2 * args.k + 1 and (v.person not in by_person or v.num_frames > by_person[v.person].num_frames):
            by_person[v.person] = v
    videos = list(by_person.values())
    if len(videos) < 2:
        raise SystemExit("need held-out videos of at least two people with 2K+1 frames")
    e_a, e_b, persons = [], [], []
    for v in videos:
        idx = np.linspace(0, v.num_frames - 1, 2 * args.k + 1).round().astype(int)
        a, b = idx[0:2 * args.k:2], idx[1:2 * args.k:2]   # two disjoint K-shot sets
        lm = np.asarray(v.landmarks, np.float32)
        e_a.append(animator.embed(v.frames(a), lm[a]))
        e_b.append(animator.embed(v.frames(b), lm[b]))
        persons.append(v.person)
    ea, eb = torch.cat(e_a), torch.cat(e_b)                          # (P, N)
    same = float((ea - eb).abs().mean())
    diff = [float((ea[i] - ea[j]).abs().mean()) for i in range(len(ea)) for j in range(len(ea)) if i < j]
    line("embedding_spread", people=len(ea), k=args.k, e_mean_abs=float(ea.abs().mean()),
         same_person=same, different_people=float(np.mean(diff)), ratio=float(np.mean(diff)) / max(same, 1e-12))

    G = animator.generator
    with torch.no_grad():
        psi = G.project(ea)                                            # (P, psi_dim)
        ident = G._identity_psi().to(psi)
        W = G.projection.weight                                        # spectral norm applied when on
        sigma = float(torch.linalg.matrix_norm(W.float(), ord=2))
    line("psi", mean_abs_from_identity=float((psi - ident).abs().mean()),
         std_across_people=float(psi.std(0).mean()), p_sigma_max=sigma,
         p_bias_mean_abs_from_identity=float((G.projection.bias.detach() - ident).abs().mean()))

    # G with each person's e on the same landmarks, and with one e on each person's landmarks
    from headpuppet.fewshot.person import Person

    people = []
    for v, e in zip(videos, ea):
        idx = np.linspace(0, v.num_frames - 1, args.k).round().astype(int)
        people.append(Person(frames=v.frames(idx), points=np.asarray(v.landmarks, np.float32)[idx], iris=None,
                             e=e[None], psi=G.project(e[None]).detach()))
    n = len(people)
    # only e changes: person t's own shots (the warp-guided G warps them) and landmarks, each person's psi
    change_e = []
    for t, person in enumerate(people):
        target = np.asarray(videos[t].landmarks, np.float32)[videos[t].num_frames // 2][None]        # (1, 68, 2)
        outs = np.stack([animator.render(Person(frames=person.frames, points=person.points, iris=None,
                                                e=q.e, psi=q.psi), target)[0] for q in people]).astype(np.float32)
        change_e += [np.abs(outs[i] - outs[j]).mean() for i in range(n) for j in range(n) if i < j]
    change_e = float(np.mean(change_e))
    # only the landmarks change: each person's own e and shots, every person's target landmarks
    targets = np.stack([np.asarray(v.landmarks, np.float32)[v.num_frames // 2] for v in videos])   # (P, 68, 2)
    outs = np.stack([animator.render(p, targets) for p in people]).astype(np.float32)            # (P, P y, S, S, 3)
    change_y = np.mean([np.abs(outs[p, i] - outs[p, j]).mean() for p in range(n) for i in range(n) for j in range(n) if i < j])
    line("output_sensitivity", only_e_changes=float(change_e), only_landmarks_change=float(change_y),
         ratio=float(change_e / max(change_y, 1e-12)), generator=type(G).__name__)

    if args.run:
        recs = [json.loads(x) for x in Path(args.run, "stats.jsonl").read_text().splitlines() if x.strip()]
        pick = [r for r in recs if "Loss/G/mch" in r]
        marks = pick[:: max(1, len(pick) // 8)] + pick[-1:]
        line("l_mch", steps=[r["step"] for r in marks], g=[round(r["Loss/G/mch"], 3) for r in marks],
             d=[round(r.get("Loss/D/mch", float("nan")), 3) for r in marks])


if __name__ == "__main__":
    main()

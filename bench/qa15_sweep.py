"""Side-by-side check of a bAbI training setting on babi-gen (one process, one thread):
naive (mean accuracy on each task right after training it) and joint (qa15 at the end, ACC),
with wall-clock times. Writes one line per run to stdout.

    python bench/qa15_sweep.py --seed 0 [--strategies joint] [--set lr=0.006 --set "hidden=[50,50]" ...]
"""

from __future__ import annotations

import time

import common
import torch

from pipeline.config import StrategyConfig, TrainConfig
from pipeline.runner import run_ordering
from tasks.registry import load_pool


@torch.no_grad()
def diagnose(pool, model) -> None:
    """Where each hop attends on qa15 test stories, and what the wrong answers are."""
    from qa15_probe import attention, support_rows

    model.eval()
    x, y = pool["qa15"].x_test, pool["qa15"].y_test
    words, answers = pool.meta["words"], pool.meta["answers"]
    is_row, fear_row = support_rows(words, x)
    ar = torch.arange(len(x))
    att = attention(model, x)
    print(
        "qa15 attention: "
        + " ".join(
            f"h{k + 1}[is {float(p[ar, is_row].mean()):.2f} fear {float(p[ar, fear_row].mean()):.2f}]"
            for k, p in enumerate(att)
        )
    )
    print("qa15 mean max attention per hop: " + " ".join(f"{float(p.max(-1).values.mean()):.2f}" for p in att))
    x1 = pool["qa1"].x_test
    peaks = " ".join(f"{float(p.max(-1).values.mean()):.2f}" for p in attention(model, x1))
    print("qa1 mean max attention per hop: " + peaks)
    saved = model.temporal.detach().clone()
    model.temporal.zero_()
    att0 = attention(model, x)
    acc0 = float((model(x, "qa15").argmax(1) == y).float().mean())
    model.temporal.copy_(saved)
    print(
        f"qa15 with the temporal terms zeroed: acc {acc0:.3f} "
        + " ".join(
            f"h{k + 1}[is {float(p[ar, is_row].mean()):.2f} fear {float(p[ar, fear_row].mean()):.2f}]"
            for k, p in enumerate(att0)
        )
    )
    t = saved.norm(dim=-1)
    print("temporal norm per table, slots 0..7: " + " | ".join(" ".join(f"{v:.1f}" for v in r[:8]) for r in t))
    pred = model(x, "qa15").argmax(1)
    wrong = pred != y
    # a wrong answer that is what the name's species is (hop 1 only), or the answer of another fear fact
    species = torch.tensor([answers.index(words[int(x[i, is_row[i], 3]) - 1]) for i in range(len(x))])
    same = int((wrong & (pred == species)).sum())
    print(f"qa15 wrong {int(wrong.sum())}/{len(y)}; of them = the name's species {same}")


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strategies", default="naive,joint")
    ap.add_argument("--label", default="")
    ap.add_argument("--set", action="append", default=[], help="TrainConfig field=value (json value)")
    args = ap.parse_args()
    import json

    torch.set_num_threads(1)
    pool = load_pool("babi-gen")
    order = pool.resolve_order(None)
    over = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = TrainConfig(**{**pool.spec.train, **over}, device="cpu")
    out = [f"{args.label} seed {args.seed} {over}"]
    for name in args.strategies.split(","):
        start = time.perf_counter()
        r = run_ordering(pool, order, StrategyConfig(name=name), cfg, seed=args.seed)
        dt = time.perf_counter() - start
        just = [r.rows[i + 1][n] for i, n in enumerate(order)]
        m = r.rmatrix.metrics()
        out.append(
            f"{name}: {dt:.1f}s just-learned mean {sum(just) / len(just):.3f} qa15 just {just[-1]:.3f} "
            f"final qa15 {r.rows[-1]['qa15']:.3f} ACC {m['acc']:.3f} BWT {m['bwt']:+.3f} "
            f"just=[{' '.join(f'{j:.2f}' for j in just)}]"
        )
        print(out[-1], flush=True)
        if name == "joint":
            diagnose(pool, r.model)
    print(" | ".join(out), flush=True)


if __name__ == "__main__":
    main()

"""Cheap probe for qa15 under joint training: one memory network trained on all babi-gen tasks at
once (their training sets shuffled together), then per-task test accuracy and where each hop's
attention goes on qa15 (on the "<name> is a <species>" fact, on the "<species> are afraid of" fact).

    python bench/qa15_probe.py --seed 0 [--epochs 20 --lr 0.003 --batch 32 --hops 3]
"""

from __future__ import annotations

import time

import common
import torch
from torch import nn

from pipeline.text_models import memn2n_for_pool
from tasks.registry import load_pool

PLURAL = {"mouse": "mice", "sheep": "sheep", "wolf": "wolves", "cat": "cats"}


def attention(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Each hop's attention (B, S), recomputed exactly as in MemN2N.features."""
    story, question = x[:, :-1], x[:, -1]
    present = (story != 0).any(-1)
    mem = (model._encode(story) + model.temporal.transpose(0, 1)).unbind(-2)
    u = model._encode(question)[:, 0]
    out = []
    for k in range(model.hops):
        p = (mem[k] * u.unsqueeze(1)).sum(-1).masked_fill(~present, -1e9).softmax(-1)
        out.append(p)
        u = u + (p.unsqueeze(-1) * mem[k + 1]).sum(1)
    return out


def support_rows(words: list[str], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Memory slot of the name's "is a" fact and of its species' fear fact, per example."""

    def text(r):
        return [words[i - 1] for i in r.tolist() if i]

    is_row, fear_row = [], []
    for ex in x:
        q = text(ex[-1])
        name = q[2]
        rows = [text(r) for r in ex[:-1]]
        i = next(k for k, r in enumerate(rows) if r[:2] == [name, "is"])
        species = rows[i][3]
        j = next(k for k, r in enumerate(rows) if r and r[0] == PLURAL[species] and r[1] == "are")
        is_row.append(i)
        fear_row.append(j)
    return torch.tensor(is_row), torch.tensor(fear_row)


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.003)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--hops", type=int, default=3)
    ap.add_argument("--dim", type=int, default=50)
    ap.add_argument("--only", default=None, help="train on this task only (e.g. qa15)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    pool = load_pool("babi-gen")
    names = [args.only] if args.only else list(pool.tasks)
    model = memn2n_for_pool(pool, [args.dim] * args.hops, None, "he", args.seed)
    x = torch.cat([pool[n].x_train for n in names])
    y = torch.cat([pool[n].y_train for n in names])
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    words = pool.meta["words"]
    xq = pool["qa15"].x_test
    is_row, fear_row = support_rows(words, xq)
    ar = torch.arange(len(xq))
    for epoch in range(args.epochs):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), args.batch):
            idx = perm[i : i + args.batch]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx], "qa15"), y[idx])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        if (epoch + 1) % 5 == 0 or epoch + 1 == args.epochs:
            with torch.no_grad():
                model.eval()
                acc = {n: float((model(pool[n].x_test, n).argmax(1) == pool[n].y_test).float().mean()) for n in names}
                if "qa15" not in acc:
                    acc["qa15"] = float((model(xq, "qa15").argmax(1) == pool["qa15"].y_test).float().mean())
                att = attention(model, xq)
                hops = " ".join(
                    f"h{k + 1}[is {float(p[ar, is_row].mean()):.2f} fear {float(p[ar, fear_row].mean()):.2f}]"
                    for k, p in enumerate(att)
                )
                model.train()
            mean = sum(acc.values()) / len(acc)
            print(
                f"ep {epoch + 1:3d} {time.perf_counter() - start:6.1f}s mean {mean:.3f} "
                + " ".join(f"{n}:{a:.2f}" for n, a in acc.items())
                + f" | {hops}",
                flush=True,
            )


if __name__ == "__main__":
    main()

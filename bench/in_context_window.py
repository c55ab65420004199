"""Where the `in-context` baseline stops working: accuracy on a wake day's probes with k of that day's documents
in the prompt (the probe's own document plus k - 1 others), cut to the context window as the baseline cuts it.

    .venv/bin/python bench/in_context_window.py                 # default profile, days 1-2 (~3 min on 2 cores)
    .venv/bin/python bench/in_context_window.py --config tiny --days 1 --out /tmp/icw

Writes bench/results/in_context_window.json and .md and prints the table.

For each k the prompt holds the probe's own document(s) and k - 1 other documents of the same day in a random
order (fixed by the seed); then, like `sleepcycle.bench.context_window_docs`, only the latest documents that
fit `max_position_embeddings` minus a question's 48 tokens are kept. Columns: prompt tokens before the cut,
the share of probes whose own document survived the cut, and accuracy on all probes and on those whose
document survived. k = 1 is the in-context ceiling the bench reports; the baseline itself puts every document
seen so far in the prompt, so on a day of 18 documents it sits at the right end of this table or beyond.
The model is the pretrained base (what the baseline uses: it never trains).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def fit_window(docs: list[str], tokenizer, budget: int) -> list[str]:
    """The latest documents that fit `budget` tokens, oldest first (the bench baseline's cut)."""
    from sleepcycle.world import DOC_PREFIX

    kept: list[str] = []
    for text in reversed(docs):
        n = len(tokenizer(DOC_PREFIX.format(d=text), add_special_tokens=False)["input_ids"])
        if n > budget:
            break
        budget -= n
        kept.append(text)
    return list(reversed(kept))


def measure(config: str, days: list[int], ks: list[int], seed: int, sets: list[str] | None = None) -> dict:
    from sleepcycle import models
    from sleepcycle.bench import MATRIX_KINDS, questions
    from sleepcycle.config import load_config
    from sleepcycle.evaluate import Question, accuracy
    from sleepcycle.pretrain import pretrain
    from sleepcycle.world import DOC_PREFIX, World

    cfg = load_config(config, list(sets or []))
    model, tok = models.load(pretrain(cfg).uri)
    world = World(cfg.world)
    budget = model.config.max_position_embeddings - 48
    rows = []
    for k in ks:
        rng = random.Random(f"icw-{seed}-{k}")
        qs, kept_own, tokens = [], [], []
        for day in days:
            day_docs = [d.text for d in world.documents(day)]
            for q in questions(world, day, as_of=day, limit=cfg.eval.probes_per_day):
                if q.kind not in MATRIX_KINDS:
                    continue
                others = [d for d in day_docs if d not in q.docs]
                chosen = list(q.docs) + rng.sample(others, max(0, min(k - len(q.docs), len(others))))
                rng.shuffle(chosen)
                tokens.append(
                    sum(len(tok(DOC_PREFIX.format(d=d), add_special_tokens=False)["input_ids"]) for d in chosen)
                )
                window = fit_window(chosen, tok, budget)
                kept_own.append(all(d in window for d in q.docs))
                qs.append(Question(q.question, q.answer, q.aliases, q.kind, tuple(window)))
        acc, hits = accuracy(
            model, tok, qs, with_docs=True, max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size
        )
        inside = [h for h, own in zip(hits, kept_own) if own]
        rows.append(
            {
                "k": k,
                "n": len(qs),
                "prompt_doc_tokens": sum(tokens) / len(tokens),
                "own_doc_in_window": sum(kept_own) / len(kept_own),
                "accuracy": acc,
                "accuracy_own_doc_in_window": sum(inside) / len(inside) if inside else None,
            }
        )
        print(
            f"k={k:>2}: {rows[-1]['prompt_doc_tokens']:.0f} doc tokens, own doc kept {rows[-1]['own_doc_in_window']:.2f},"
            f" accuracy {acc:.3f}",
            flush=True,
        )
    return {
        "config": config,
        "overrides": list(sets or []),
        "days": days,
        "seed": seed,
        "docs_per_day": [len(world.documents(d)) for d in days],
        "window_tokens": model.config.max_position_embeddings,
        "doc_budget_tokens": budget,
        "rows": rows,
    }


def table(result: dict) -> str:
    lines = [
        f"In-context accuracy vs documents in the prompt ({result['config']} profile, days {result['days']}, "
        f"{result['docs_per_day']} documents a day, window {result['window_tokens']} tokens, "
        f"{result['doc_budget_tokens']} for documents)",
        "",
        "| docs in prompt (k) | doc tokens before cut | own doc in window | accuracy | accuracy, own doc in window |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        inside = "-" if r["accuracy_own_doc_in_window"] is None else f"{r['accuracy_own_doc_in_window']:.3f}"
        lines.append(
            f"| {r['k']} | {r['prompt_doc_tokens']:.0f} | {r['own_doc_in_window']:.2f} | {r['accuracy']:.3f} | {inside} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="default")
    ap.add_argument("--days", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--ks", nargs="+", type=int, default=[1, 2, 4, 8, 12, 18])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="config override (key=value), e.g. of pretraining")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    t0 = time.time()
    result = measure(args.config, args.days, args.ks, args.seed, args.set)
    result["wall_clock_s"] = round(time.time() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "in_context_window.json").write_text(json.dumps(result, indent=2) + "\n")
    md = table(result)
    (args.out / "in_context_window.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

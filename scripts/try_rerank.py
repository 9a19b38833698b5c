"""A full-depth rerank, measured by recall alone: the default recall at a larger budget gives the
candidates; the whole model reads them (instruction, candidates, question) once, and the question
tokens' attention at a set of layers ranks the candidates' sentences, best first, into the
default budget. How often the answering passage is read, per wording, beside the default recall,
the candidates themselves and BM25 (``scripts/tune_recall.py`` measures ILReConfig's settings the
same way; a rerank is not one of them).

    python scripts/try_rerank.py --questions tuning --seeds 0,2 --threads 2

A unit's score is, per layer, head and question token, its best token's attention ('max') or its
tokens' summed attention ('sum'), averaged over layers, heads and question tokens.
"""

from __future__ import annotations

import argparse
import sys

import torch
from tqdm import tqdm

from evaluation.documents import QUESTION_SETS, document_tasks
from ilre import cli
from ilre.prompt import assemble



def layer_sets(n: int, retrieval: int) -> dict[str, range | tuple[int]]:
    """The layers whose attention ranks: all of them, each third, the retrieval layer alone."""
    third = n // 3
    return {"all layers": range(n), "the lowest third": range(third), "the middle third": range(third, 2 * third),
            "the top third": range(2 * third, n), "the retrieval layer": (retrieval,)}


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python scripts/try_rerank.py", __doc__)
    p.add_argument("--questions", choices=tuple(QUESTION_SETS), default="tuning",
                   help="the question set; default: %(default)s")
    p.add_argument("--seeds", type=cli.listed(int, 0), default=(0, 2), help="window seeds; default: 0,2")
    p.add_argument("--candidates", type=int, default=768, help="candidate tokens; default: 768")
    cli.add_model_options(p)
    return p


def prompt_positions(n_prefix: int, positions: list[int], gap: int) -> torch.Tensor:
    """Where each recalled context token sits in the prompt that ``assemble`` builds."""
    out, at, prev = [], n_prefix, None
    for x in positions:
        if prev is not None and x != prev + 1:
            at += gap
        out.append(at)
        at, prev = at + 1, x
    return torch.tensor(out)


def choose(candidates: torch.Tensor, units: torch.Tensor, score: torch.Tensor, budget: int) -> torch.Tensor:
    """Whole candidate units by ``score`` (one per unique unit), best first, while they fit."""
    unique = torch.unique(units)
    chosen, used = [], 0
    for j in torch.argsort(score, descending=True).tolist():
        tokens = candidates[units == unique[j]]
        if used + tokens.numel() <= budget:
            chosen.append(tokens)
            used += tokens.numel()
    return torch.sort(torch.cat(chosen)).values


def run(args: argparse.Namespace) -> None:
    from evaluation.baselines import Sample
    from evaluation.systems import SYSTEMS
    from evaluation.tasks import passage_read, tokenizer_len_for

    ilre = cli.load_pipeline(args)
    ilre.model.set_attn_implementation("eager")  # attention weights are returned by eager attention only
    budget = ilre.config.budget
    wide = ilre.with_config(budget=args.candidates)
    gap = ilre.template.encode_text(ilre.config.gap_marker)
    tasks = [t for seed in args.seeds for t in document_tasks(tokenizer_len_for(ilre.tokenizer), 4096, seed,
                                                               data=QUESTION_SETS[args.questions])]
    totals: dict[str, dict[str, float]] = {}

    def add(name: str, wording: str, value: float) -> None:
        totals.setdefault(name, {}).setdefault(wording, 0.0)
        totals[name][wording] += value

    for task in tqdm(tasks, desc="windows"):
        wording = task.task.split("/")[-1]
        encoded = ilre.encode(task.context)
        sample = Sample.of(ilre, task.context, task.question)
        candidates = wide.recall(encoded, task.question)[0]
        add("default", wording, passage_read(task, sample.read_spans(ilre.recall(encoded, task.question)[0])))
        add(f"the {args.candidates} candidates", wording, passage_read(task, sample.read_spans(candidates)))
        add("bm25", wording, passage_read(task, sample.read_spans(SYSTEMS["rag"].selector.select(sample, budget))))
        query = ilre.template.query(task.question)
        prompt = assemble(encoded.prefix_ids, encoded.tokens.ids, candidates, query.ids, gap)
        rows = torch.arange(prompt.numel() - query.ids.numel(), prompt.numel())[query.question]
        columns = prompt_positions(encoded.prefix_ids.numel(), candidates.tolist(), gap.numel())
        with torch.inference_mode():
            attentions = ilre.model(prompt[None], output_attentions=True).attentions
        attention = torch.stack([a[0][:, rows][:, :, columns] for a in attentions])  # [layer, head, question, C]
        units = ilre.recaller.units(encoded.tokens).index()[candidates]
        slot = torch.searchsorted(torch.unique(units), units).expand(attention.shape[1:])
        for name, layers in layer_sets(len(attentions), ilre.config.layer).items():
            for how in ("max", "sum"):
                picked = attention[list(layers)]
                per_unit = torch.zeros(picked.shape[:3] + (int(slot.max()) + 1,))
                per_unit = (per_unit.scatter_reduce(3, slot.expand(picked.shape), picked, reduce="amax") if how == "max"
                            else per_unit.scatter_add(3, slot.expand(picked.shape), picked))
                chosen = choose(candidates, units, per_unit.mean(dim=(0, 1, 2)), budget)
                add(f"rerank by {name}, {how}", wording, passage_read(task, sample.read_spans(chosen)))
    print("| recall | lexical | paraphrase | all |\n| --- | --- | --- | --- |")
    for name, cells in totals.items():
        print(f"| {name} | {cells.get('lexical', 0):g} | {cells.get('paraphrase', 0):g} | {sum(cells.values()):g} |")


if __name__ == "__main__":
    sys.exit(cli.main(build_parser(), run))

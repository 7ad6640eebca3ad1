"""`slm eval`: small offline tasks shipped with the package, scored the way the field scores them.

- ``perplexity``: ``exp(-mean log p(token | tokens before))`` over public-domain paragraphs,
  from the model's own logits (one forward over the text). Lower is better.
- ``multiple-choice``: 20 general-knowledge questions; the predicted answer is the choice
  with the highest log-likelihood after ``Question: ...\\nAnswer:`` (lm-evaluation-harness's
  ``acc``; ``acc_norm`` divides by the choice's length in bytes).
- ``translation``: French to English through the chat template, greedy, scored with chrF
  (sacrebleu).
- ``summarization``: one-sentence summaries, greedy, scored with ROUGE-1/2/L F1 (rouge-score).

The first two need logits for every prompt token: a local model only. The data sets are tiny on
purpose: they tell two small models apart in seconds, they are not a leaderboard.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Callable, Sequence

import numpy as np

from slmkit.errors import BackendUnavailableError, InvalidParameterError, InvalidRequestError
from slmkit.types import SamplingParams

LOGIT_TASKS = ("perplexity", "multiple-choice")
GENERATION_TASKS = ("translation", "summarization")
TASKS = LOGIT_TASKS + GENERATION_TASKS
_DATA_FILES = {"perplexity": "perplexity.jsonl", "multiple-choice": "multiple_choice.jsonl",
               "translation": "translation.jsonl", "summarization": "summarization.jsonl"}


@dataclass
class TaskResult:
    """One task's outcome: the headline ``score`` (named by ``metric``), other metrics, and one
    record per item so a surprising number can be traced to its examples."""

    task: str
    metric: str
    score: float
    higher_is_better: bool
    metrics: dict[str, float]
    items: list[dict[str, Any]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalReport:
    model: str
    results: list[TaskResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "tasks": {r.task: r.to_dict() for r in self.results}}


def load_task_data(task: str) -> list[dict[str, Any]]:
    """The bundled items of a task (``slmkit/tools/data/*.jsonl``)."""
    _check_task(task)
    text = resources.files("slmkit.tools").joinpath("data", _DATA_FILES[task]).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def default_tasks(llm) -> list[str]:
    """Every task the model can run: a remote model has no logits, so only the generation ones."""
    return list(TASKS if can_score(llm) else GENERATION_TASKS)


def can_score(llm) -> bool:
    return hasattr(llm, "scorer")


def evaluate(llm, tasks: Sequence[str] | None = None, *, limit: int | None = None,
             on_task: Callable[[str], None] | None = None) -> EvalReport:
    """Run `tasks` (default: `default_tasks`) on a loaded `LLM` or `RemoteLLM`; `limit` caps the
    items per task."""
    tasks = list(tasks or default_tasks(llm))
    for task in tasks:
        _check_task(task)
        if task in LOGIT_TASKS and not can_score(llm):
            raise InvalidRequestError(
                f"{task} needs the model's log-probability of every prompt token; {llm.name} runs behind a "
                f"provider's API, which does not return them. Evaluate a local model, or use "
                f"--task {' / --task '.join(GENERATION_TASKS)}")
    report = EvalReport(llm.name)
    runners = {"perplexity": perplexity, "multiple-choice": multiple_choice,
               "translation": translation, "summarization": summarization}
    for task in tasks:
        if on_task:
            on_task(task)
        items = load_task_data(task)[:limit] if limit else load_task_data(task)
        report.results.append(runners[task](llm, items))
    return report


# -- log-likelihood tasks ----------------------------------------------------------------
def perplexity(llm, documents: Sequence[dict[str, Any]]) -> TaskResult:
    """Perplexity over all tokens of all documents (each scored from its own start)."""
    started = time.perf_counter()
    items, total_logprob, total_tokens = [], 0.0, 0
    with llm.scorer() as scorer:
        for doc in documents:
            logprobs = scorer.token_logprobs(llm.encode_prompt(doc["text"]))
            total_logprob += float(logprobs.sum())
            total_tokens += len(logprobs)
            items.append({"source": doc.get("source", ""), "tokens": len(logprobs),
                          "perplexity": math.exp(-float(logprobs.mean()))})
    mean = total_logprob / total_tokens
    return TaskResult("perplexity", "perplexity", math.exp(-mean), False,
                      {"perplexity": math.exp(-mean), "mean_logprob": mean, "tokens": total_tokens},
                      items, time.perf_counter() - started)


def multiple_choice(llm, questions: Sequence[dict[str, Any]]) -> TaskResult:
    started = time.perf_counter()
    items = []
    with llm.scorer() as scorer:
        for q in questions:
            context = f"Question: {q['question']}\nAnswer:"
            context_ids = llm.encode_prompt(context)
            continuations = [_continuation_ids(llm, context_ids, context, choice) for choice in q["choices"]]
            scores = [float(s.sum()) for s in scorer.continuation_logprobs(context_ids, continuations)]
            normalized = [s / len(f" {c}".encode()) for s, c in zip(scores, q["choices"])]
            predicted, predicted_norm = int(np.argmax(scores)), int(np.argmax(normalized))
            items.append({"question": q["question"], "choices": q["choices"], "answer": q["answer"],
                          "predicted": predicted, "correct": predicted == q["answer"],
                          "correct_norm": predicted_norm == q["answer"], "logprobs": scores})
    accuracy = sum(i["correct"] for i in items) / len(items)
    accuracy_norm = sum(i["correct_norm"] for i in items) / len(items)
    return TaskResult("multiple-choice", "accuracy", accuracy, True,
                      {"accuracy": accuracy, "accuracy_norm": accuracy_norm, "questions": len(items)},
                      items, time.perf_counter() - started)


def _continuation_ids(llm, context_ids: list[int], context: str, choice: str) -> list[int]:
    """The tokens `choice` adds after the context: those of the joined text past the context's,
    when the tokenizer keeps the boundary; else the choice encoded alone."""
    full = llm.encode_prompt(f"{context} {choice}")
    if full[: len(context_ids)] == context_ids and len(full) > len(context_ids):
        return full[len(context_ids):]
    return llm.tokenizer.encode(f" {choice}", add_special=False, parse_special=False)


# -- generation tasks ---------------------------------------------------------------------
# One line is the answer (small models ramble on after it; base models never stop).
GREEDY = SamplingParams(temperature=0.0, max_tokens=80, stop=["\n"])


def translation(llm, pairs: Sequence[dict[str, Any]]) -> TaskResult:
    sacrebleu = _optional("sacrebleu", "translation")
    started = time.perf_counter()
    hypotheses = [_answer(llm, "Translate this French sentence to English. Reply with the English "
                               f"sentence only.\n\n{p['source']}") for p in pairs]
    references = [p["reference"] for p in pairs]
    items = [{"source": p["source"], "reference": ref, "hypothesis": hyp,
              "chrf": sacrebleu.sentence_chrf(hyp, [ref]).score}
             for p, ref, hyp in zip(pairs, references, hypotheses)]
    chrf = sacrebleu.corpus_chrf(hypotheses, [references]).score
    return TaskResult("translation", "chrF", chrf, True, {"chrF": chrf, "sentences": len(items)},
                      items, time.perf_counter() - started)


def summarization(llm, documents: Sequence[dict[str, Any]]) -> TaskResult:
    rouge_scorer = _optional("rouge_score.rouge_scorer", "summarization")
    started = time.perf_counter()
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    items = []
    for doc in documents:
        summary = _answer(llm, f"Summarize this text in one sentence.\n\n{doc['document']}")
        scores = scorer.score(doc["reference"], summary)
        items.append({"reference": doc["reference"], "summary": summary,
                      **{name: s.fmeasure for name, s in scores.items()}})
    metrics = {name: float(np.mean([i[name] for i in items])) for name in ("rouge1", "rouge2", "rougeL")}
    return TaskResult("summarization", "rougeL", metrics["rougeL"], True,
                      {**metrics, "documents": len(items)}, items, time.perf_counter() - started)


def _answer(llm, instruction: str) -> str:
    """The model's greedy reply: its first line."""
    return llm.chat([{"role": "user", "content": instruction}], GREEDY).text.strip()


def _optional(module: str, task: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the {task} task needs {module.split('.')[0]}: pip install 'slmkit[tools]'") from exc


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise InvalidParameterError("task", f"unknown task {task!r}; known: {', '.join(TASKS)}")

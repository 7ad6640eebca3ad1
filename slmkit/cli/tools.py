"""`slm compare`, `slm bench`, `slm eval`: the tools, registered on the `slm` app."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer
from rich.live import Live
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from slmkit.cli import options as opt
from slmkit.cli.app import app, console, err_console
from slmkit.errors import InvalidParameterError

JsonOutput = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


# -- compare ------------------------------------------------------------------------------
def _names_a_model(text: str) -> bool:
    """Whether ``text`` is a model reference rather than a prompt (a forgotten PROMPT)."""
    from pathlib import Path

    from slmkit.providers.registry import parse_model_string
    from slmkit.store.catalog import CATALOG
    from slmkit.store.store import ModelStore, looks_like_path, parse_reference

    if parse_model_string(text) is not None:
        return True
    if looks_like_path(text):
        return Path(text).expanduser().exists()
    try:
        name, _ = parse_reference(text)
    except InvalidParameterError:
        return False
    return name in CATALOG or ModelStore().manifest(name) is not None


@app.command()
def compare(
    models_and_prompt: Annotated[list[str], typer.Argument(
        metavar="MODEL MODEL... [PROMPT]",
        help="Models (store names, .gguf paths, provider strings like ollama:phi3.5), then the prompt "
             "unless --prompts is given.")],
    prompts: Annotated[Optional[str], typer.Option("--prompts", help="JSONL file: one "
                       '{"prompt": ...} or {"messages": [...]} a line.')] = None,
    json_output: JsonOutput = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="A Markdown report on stdout.")] = False,
    max_tokens: opt.MaxTokens = None, temperature: opt.Temperature = None, top_k: opt.TopK = None,
    top_p: opt.TopP = None, min_p: opt.MinP = None, repetition_penalty: opt.RepetitionPenalty = None,
    frequency_penalty: opt.FrequencyPenalty = None, presence_penalty: opt.PresencePenalty = None,
    seed: opt.Seed = None, stop: opt.Stop = None, stop_token_id: opt.StopTokenIds = None,
    logit_bias: opt.LogitBias = None, ignore_eos: opt.IgnoreEos = False,
    context_length: opt.ContextLength = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads per local model (default: the cores "
                       "split between them).", rich_help_panel="Model")] = None,
    trust_remote_code: opt.TrustRemoteCode = False,
):
    """Run models concurrently on the same prompts and show them side by side as they stream."""
    from slmkit.tools.compare import Comparison, load_prompts, to_markdown
    from slmkit.types import Message

    if json_output and markdown:
        raise InvalidParameterError("json", "choose one of --json and --markdown")
    if prompts is not None:
        models, conversations = models_and_prompt, load_prompts(prompts)
    else:
        if len(models_and_prompt) < 2:
            raise InvalidParameterError("prompt", "give one or more models then a PROMPT, or --prompts FILE.jsonl")
        if _names_a_model(models_and_prompt[-1]):
            raise InvalidParameterError(
                "prompt", f"the last argument {models_and_prompt[-1]!r} names a model, so there is no "
                "prompt: put the PROMPT after the models (quote it), or use --prompts FILE.jsonl")
        models, conversations = models_and_prompt[:-1], [[Message("user", models_and_prompt[-1])]]
    if not models:
        raise InvalidParameterError("models", "name at least one model before the prompt")
    flags = opt.SamplingFlags(max_tokens, temperature, top_k, top_p, min_p, repetition_penalty,
                              frequency_penalty, presence_penalty, seed, stop, stop_token_id, logit_bias,
                              None, None, ignore_eos)
    with err_console.status(f"loading {', '.join(models)}...", spinner="dots"):
        comparison = Comparison(models, lambda llm: flags.apply(llm.default_params), threads=threads,
                                context_length=context_length, trust_remote_code=trust_remote_code)
    results = []
    try:
        live_view = not (json_output or markdown)
        for number, messages in enumerate(conversations, 1):
            if not live_view:
                results.append(comparison.run(messages))
                continue
            console.print(Rule(Text.assemble((f"{number}/{len(conversations)}", "bold"), f" {messages[-1].content}"),
                               align="left"))
            with Live(console=console, refresh_per_second=8, transient=False) as live:
                results.append(comparison.run(messages, lambda runs: live.update(_compare_view(runs))))
    finally:
        comparison.close()
    if json_output:
        console.print_json(json.dumps({"models": [r.model for r in results[0].runs],
                                       "prompts": [r.to_dict() for r in results]}))
    elif markdown:
        sys.stdout.write(to_markdown(results) + "\n")
    if any(run.error for r in results for run in r.runs):
        raise typer.Exit(1)


def _compare_view(runs) -> Table:
    grid = Table.grid(expand=True, padding=(0, 1))
    for _ in runs:
        grid.add_column(ratio=1)
    # Each panel's share of the terminal, less the padding between panels, its two borders, the
    # border dashes beside the subtitle and the spaces rich puts around it.
    width = max(8, (console.width - (len(runs) - 1)) // max(1, len(runs)) - 6)
    panels = []
    for run in runs:
        body = Text(f"error: {run.error}", style="red") if run.error else Text(run.text)
        panels.append(Panel(body, title=Text(run.model, style="bold"), subtitle=Text(compare_footer(run, width)),
                            border_style="green" if run.done and not run.error else "blue"))
    grid.add_row(*panels)
    return grid


def compare_footer(run, width: int) -> str:
    """The stats under a model's answer, shortened until they fit ``width`` columns: the token
    count goes first, then the TTFT label, then the least needed numbers."""
    ttft = f"{run.ttft:.2f}s" if run.ttft is not None else "waiting"
    rate = f"{run.tokens_per_second:.1f} tok/s" if run.tokens_per_second else None
    finish = (run.finish_reason or "error") if run.done else None
    labelled = f"TTFT {ttft}" if run.ttft is not None else ttft
    candidates = [
        [labelled, rate, f"{run.completion_tokens} tok", finish],
        [labelled, rate, finish],
        [ttft, rate, finish],
        [rate or ttft, finish],
        [finish or rate or ttft],
    ]
    for parts in candidates:
        text = " · ".join(p for p in parts if p)
        if len(text) <= width:
            return text
    return text[:width]


# -- bench --------------------------------------------------------------------------------
@app.command()
def bench(
    target: Annotated[str, typer.Argument(metavar="MODEL|URL", help="A local model (smollm2) or a server "
                      "speaking the OpenAI API (http://127.0.0.1:8000).")],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model name at the URL "
                     "(default: the first the server lists).")] = None,
    concurrency: Annotated[str, typer.Option(help="Concurrent requests per level, comma-separated.")] = "1,4,8",
    prompt_tokens: Annotated[int, typer.Option(min=2, help="Prompt length (exact locally, approximate "
                             "for a URL).")] = 128,
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", min=1, help="Tokens generated per request.")] = 64,
    json_output: JsonOutput = False,
    plot: Annotated[Optional[str], typer.Option("--plot", help="Also draw the numbers into this PNG.")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="Bearer key for the URL (default: OPENAI_API_KEY).")] = None,
    no_ignore_eos: Annotated[bool, typer.Option("--no-ignore-eos", help="Do not send ignore_eos to the URL "
                             "(for servers that reject unknown fields).")] = False,
    threads: opt.Threads = None,
):
    """TTFT, prefill and decode tokens/s, aggregate throughput and memory per concurrency level."""
    from slmkit.providers.registry import parse_model_string
    from slmkit.tools import bench as tools_bench

    levels = tools_bench.parse_concurrency(concurrency)
    table = _bench_table()

    def show(level) -> None:
        if not json_output:
            _bench_row(table, level)
            err_console.print(f"  {level.concurrency} concurrent: done", style="dim")

    if tools_bench.is_url(target):
        report = tools_bench.bench_url(target, levels, model=model, prompt_tokens=prompt_tokens,
                                       max_tokens=max_tokens, api_key=api_key, ignore_eos=not no_ignore_eos,
                                       on_level=show)
    else:
        if parse_model_string(target) is not None:
            raise InvalidParameterError("model", f"bench a provider through its URL (slm bench URL --model NAME); "
                                        f"{target} has no local engine to measure")
        with err_console.status(f"benchmarking {target}...", spinner="dots"):
            report = tools_bench.bench_local(target, levels, prompt_tokens=prompt_tokens,
                                             max_tokens=max_tokens, threads=threads, on_level=show)
    if plot:
        tools_bench.plot(report, plot)
    if json_output:
        console.print_json(json.dumps(report.to_dict()))
        return
    console.print(Text.assemble((report.model, "bold"),
                                f" ({report.kind}{f', {report.threads} threads' if report.threads else ''}): "
                                f"{report.prompt_tokens}-token prompts, {report.max_tokens} new tokens each"))
    console.print(table)
    if plot:
        console.print(f"plot: {plot}")


def _bench_table() -> Table:
    table = Table(box=None)
    for header in ("CONCURRENCY", "TTFT mean/max (ms)", "PREFILL tok/s", "DECODE tok/s/stream",
                   "THROUGHPUT tok/s", "RSS MB"):
        table.add_column(header, justify="right")
    return table


def _bench_row(table: Table, level) -> None:
    decode = f"{level.decode_tokens_per_second:.1f}" if level.decode_tokens_per_second else "-"
    rss = f"{level.rss_mb:.0f}" if level.rss_mb else "-"
    table.add_row(str(level.concurrency), f"{level.ttft_seconds * 1000:.0f} / {level.ttft_max_seconds * 1000:.0f}",
                  f"{level.prefill_tokens_per_second:.0f}", decode, f"{level.throughput_tokens_per_second:.1f}", rss)


# -- eval ---------------------------------------------------------------------------------
@app.command("eval")
def eval_command(
    model: Annotated[Optional[str], typer.Argument(help="Model to evaluate (or use --compare A B).")] = None,
    task: Annotated[Optional[list[str]], typer.Option("--task", "-t", help="perplexity, multiple-choice, "
                    "translation or summarization (repeatable; default: all the model can run).")] = None,
    compare_models: Annotated[Optional[tuple[str, str]], typer.Option("--compare", help="Two models side by side.")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="At most this many items per task.")] = None,
    json_output: JsonOutput = False,
    context_length: opt.ContextLength = None, threads: opt.Threads = None,
):
    """Score a model on small bundled tasks: perplexity, multiple choice, translation (chrF),
    summarization (ROUGE)."""
    from slmkit.llm import LLM
    from slmkit.tools.evaluate import default_tasks, evaluate

    names = list(compare_models) if compare_models else [model] if model else []
    if not names or (model and compare_models):
        raise InvalidParameterError("model", "give one MODEL, or --compare A B")
    reports = []
    for name in names:
        with err_console.status(f"loading {name}...", spinner="dots"):
            llm = LLM(name, context_length=context_length, threads=threads)
        try:
            tasks = task or default_tasks(llm)
            with err_console.status(f"{name}: evaluating...", spinner="dots") as status:
                reports.append(evaluate(llm, tasks, limit=limit,
                                        on_task=lambda t, n=name: status.update(f"{n}: {t}...")))
        finally:
            llm.close()
    if json_output:
        payload = reports[0].to_dict() if len(reports) == 1 else {"models": [r.to_dict() for r in reports]}
        console.print_json(json.dumps(payload))
        return
    table = Table("TASK", "METRIC", *[r.model for r in reports], box=None)
    for index, result in enumerate(reports[0].results):
        others = [next((x for x in r.results if x.task == result.task), None) for r in reports]
        arrow = "↑" if result.higher_is_better else "↓"
        table.add_row(result.task, f"{result.metric} {arrow}",
                      *[f"{x.score:.3f}" if x else "-" for x in others])
        for extra in sorted(set(result.metrics) - {result.metric}):
            table.add_row("", extra, *[_metric(x.metrics.get(extra)) if x else "-" for x in others], style="dim")
    console.print(table)


def _metric(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


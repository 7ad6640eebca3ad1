"""`slm run` and `slm generate`: chat with a model or continue raw text, streaming."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from slmkit.cli import options as opt
from slmkit.cli.app import ModelArg, app, load_llm
from slmkit.store.catalog import DEFAULT_MODEL


@app.command()
def run(
    model: Annotated[str, typer.Argument(help="Model to chat with.")] = DEFAULT_MODEL,
    prompt: Annotated[Optional[str], typer.Argument(help="Answer this one prompt and exit.")] = None,
    system: Annotated[Optional[str], typer.Option(help="System prompt (default: the model's).")] = None,
    max_tokens: opt.MaxTokens = None, temperature: opt.Temperature = None, top_k: opt.TopK = None,
    top_p: opt.TopP = None, min_p: opt.MinP = None, repetition_penalty: opt.RepetitionPenalty = None,
    frequency_penalty: opt.FrequencyPenalty = None, presence_penalty: opt.PresencePenalty = None,
    seed: opt.Seed = None, stop: opt.Stop = None, stop_token_id: opt.StopTokenIds = None,
    logit_bias: opt.LogitBias = None, num_beams: opt.NumBeams = None, length_penalty: opt.LengthPenalty = None,
    ignore_eos: opt.IgnoreEos = False, format: opt.Format = None, json_schema: opt.JsonSchema = None,
    regex: opt.Regex = None, grammar: opt.Grammar = None,
    context_length: opt.ContextLength = None, threads: opt.Threads = None,
    backend: opt.Backend = "auto", dtype: opt.Dtype = "auto", device: opt.Device = "auto",
    quantize: opt.Quantize = "none", trust_remote_code: opt.TrustRemoteCode = False,
    speculative: opt.Speculative = None, draft_model: opt.DraftModel = None, verbose: opt.Verbose = False,
    image: opt.Images = None, video: opt.Video = None, frames: opt.Frames = 8, num_crops: opt.NumCrops = None,
    speak: Annotated[bool, typer.Option("--speak", help="Read each answer aloud (eSpeak NG, offline).")] = False,
):
    """Chat with a model: one PROMPT, lines piped on stdin, or an interactive REPL."""
    from slmkit.cli.session import ChatSession, repl
    from slmkit.vision.images import load_image
    from slmkit.vision.video import sample_frames

    # decoded (and checked) before the model loads: a bad file is one line, at once
    media = [load_image(path, path) for path in image or []]
    if video is not None:
        media += sample_frames(video, frames)

    flags = opt.SamplingFlags(max_tokens, temperature, top_k, top_p, min_p, repetition_penalty,
                              frequency_penalty, presence_penalty, seed, stop, stop_token_id, logit_bias,
                              num_beams, length_penalty, ignore_eos, format, json_schema, regex, grammar)
    llm = load_llm(model, context_length, threads, system, backend, dtype, device, quantize, speculative,
                   trust_remote_code, draft_model)
    session = ChatSession(llm, flags.apply(llm.default_params), verbose=verbose, system=llm.system_prompt,
                          num_crops=num_crops)
    session.attach(media)
    llm.system_prompt = None  # the session adds its own system message (changeable with /system)
    if speak:
        from slmkit.cli.tasks import answer_speaker

        session.on_answer = answer_speaker(sys.stderr)
    if prompt is not None:
        session.ask(prompt, sys.stdout, sys.stderr)
        return
    code = repl(session, interactive=sys.stdin.isatty())
    if code:
        raise typer.Exit(code)


@app.command()
def generate(
    model: ModelArg,
    prompt: Annotated[str, typer.Argument(help="Text to continue (no chat template).")],
    max_tokens: opt.MaxTokens = None, temperature: opt.Temperature = None, top_k: opt.TopK = None,
    top_p: opt.TopP = None, min_p: opt.MinP = None, repetition_penalty: opt.RepetitionPenalty = None,
    frequency_penalty: opt.FrequencyPenalty = None, presence_penalty: opt.PresencePenalty = None,
    seed: opt.Seed = None, stop: opt.Stop = None, stop_token_id: opt.StopTokenIds = None,
    logit_bias: opt.LogitBias = None, num_beams: opt.NumBeams = None, length_penalty: opt.LengthPenalty = None,
    ignore_eos: opt.IgnoreEos = False, format: opt.Format = None, json_schema: opt.JsonSchema = None,
    regex: opt.Regex = None, grammar: opt.Grammar = None,
    context_length: opt.ContextLength = None, threads: opt.Threads = None,
    backend: opt.Backend = "auto", dtype: opt.Dtype = "auto", device: opt.Device = "auto",
    quantize: opt.Quantize = "none", trust_remote_code: opt.TrustRemoteCode = False,
    speculative: opt.Speculative = None, draft_model: opt.DraftModel = None, verbose: opt.Verbose = False,
):
    """Complete raw text (no chat template), streaming."""
    from slmkit.cli.session import print_stats, print_stream

    flags = opt.SamplingFlags(max_tokens, temperature, top_k, top_p, min_p, repetition_penalty,
                              frequency_penalty, presence_penalty, seed, stop, stop_token_id, logit_bias,
                              num_beams, length_penalty, ignore_eos, format, json_schema, regex, grammar)
    llm = load_llm(model, context_length, threads, None, backend, dtype, device, quantize, speculative,
                   trust_remote_code, draft_model)
    params = flags.apply(llm.default_params)
    result = print_stream(llm.generate(prompt, params, stream=True), sys.stdout)
    if verbose:
        print_stats(llm, result, sys.stderr)

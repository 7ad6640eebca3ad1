"""`LLM`: the convenient Python API over a local model.

    from slmkit import LLM, SamplingParams
    llm = LLM("smollm2")
    out = llm.generate("The capital of France is", SamplingParams(max_tokens=16, temperature=0))
    for delta in llm.chat([{"role": "user", "content": "Hi"}], stream=True):
        print(delta.text, end="")

A vision model (a Phi-3/3.5-vision folder on the torch engine) also reads images:

    vlm = LLM("path/to/Phi-3.5-vision-instruct")
    vlm.chat([{"role": "user", "content": "Compare these charts"}], images=["a.png", "b.png"])
"""

from __future__ import annotations

import numbers
import time
import uuid
from contextlib import contextmanager
from typing import Iterator, Sequence

from slmkit.backends.base import EmbeddingSpan
from slmkit import limits
from slmkit.backends.base import OneSlot
from slmkit.backends.draft import load_draft_model
from slmkit.backends.loading import BackendOptions, load_model
from slmkit.backends.ortgenai_search import SEARCH_MODES
from slmkit.engine.engine import DRAFT_NEEDS_MODEL, Engine, Request
from slmkit.engine.generator import Generator
from slmkit.engine.scoring import Scorer
from slmkit.engine.sequence import check_fits
from slmkit.engine.text_stream import TextStream
from slmkit.errors import InvalidParameterError, InvalidRequestError
from slmkit.outputs import chain_outputs, join_outputs
from slmkit.sampling import beam_search, make_constraint
from slmkit.structure import Tool
from slmkit.store.catalog import DEFAULT_MODEL
from slmkit.store.store import ModelStore
from slmkit.text import ChatTemplate
from slmkit.text.prompt import EncodedPrompt, PromptFormatter
from slmkit.text.tool_calls import parse_tool_calls
from slmkit.types import Message, RequestOutput, SamplingParams, Timings, Usage
from slmkit.vision.images import ImageInput


class LLM:
    """A local model: store name (``smollm2``, ``smollm2:original``), a path to a ``.gguf`` or a
    Hugging Face folder. ``backend``: ``auto`` (llama.cpp for GGUF, ONNX Runtime GenAI for a
    folder with ``genai_config.json``, torch for HF folders of the architectures we implement,
    transformers for other HF folders), ``llamacpp``, ``ortgenai``, ``torch`` (our own PyTorch
    models; ``dtype``, ``device`` and ``quantize`` — ``int8`` weight-only — apply to it) or
    ``transformers`` (Hugging Face's ``AutoModelForCausalLM``; ``dtype`` and ``device`` apply).
    ``trust_remote_code``: let the transformers engine run the model code a local folder brings
    (its ``config.json`` ``auto_map``, e.g. Phi-3-small's). ``search``:
    ``slmkit`` (our sampling over the engine's logits) or, with the ortgenai engine, ``ortgenai``
    (ORT GenAI's own greedy / sampling / repetition penalty / beam search inside its Generator).

    ``speculative``: ``off``, ``ngram`` (prompt lookup) or ``draft``: ``draft_model`` (a store name
    or path with the same tokenizer, much smaller than this model) proposes tokens that this
    model verifies; giving a ``draft_model`` makes ``draft`` the default. The output is the same
    either way (token for token when greedy, in distribution when sampled); requests may choose
    per call with ``SamplingParams(speculative=...)``.

    A provider model string (``github:Phi-3.5-mini-instruct``, ``ollama:phi3.5``, ...) gives a
    `RemoteLLM` with the same ``chat`` / ``generate`` API instead.
    """

    def __new__(cls, model: str = DEFAULT_MODEL, *args, **kwargs):
        if cls is LLM and isinstance(model, str):
            from slmkit.providers.registry import parse_model_string

            if parse_model_string(model) is not None:
                from slmkit.remote_llm import RemoteLLM

                return RemoteLLM(model, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        context_length: int | None = None,
        threads: int | None = None,
        max_sequences: int = 16,
        system_prompt: str | None = None,
        store: ModelStore | None = None,
        backend: str = "auto",
        dtype: str = "auto",
        device: str = "auto",
        search: str = "slmkit",
        quantize: str = "none",
        speculative: str | None = None,
        trust_remote_code: bool = False,
        draft_model: str | None = None,
    ):
        if speculative is None:
            speculative = "draft" if draft_model else "off"
        if speculative not in limits.SPECULATIVE_MODES:
            raise InvalidParameterError("speculative", f"must be one of {', '.join(limits.SPECULATIVE_MODES)}, "
                                        f"got {speculative!r}")
        if speculative == "draft" and not draft_model:
            raise InvalidParameterError("speculative", DRAFT_NEEDS_MODEL)
        if draft_model is not None and (not isinstance(draft_model, str) or not draft_model.strip()):
            raise InvalidParameterError("draft_model", f"must be a model name or path, got {draft_model!r}")
        self.speculative = speculative  # the default of requests whose params do not choose
        started = time.perf_counter()
        if search not in SEARCH_MODES:
            raise InvalidParameterError("search", f"{search!r} is not one of {', '.join(SEARCH_MODES)}")
        if draft_model and search == "ortgenai":
            raise InvalidParameterError("draft_model", "ORT GenAI's own search runs inside its Generator, where "
                                        "nothing verifies drafts; use search='slmkit'")
        store = store or ModelStore()
        resolved = store.resolve(model)
        self.name = resolved.name
        self.manifest = resolved.manifest
        options = BackendOptions(backend, dtype, device, threads, quantize, trust_remote_code)
        self.backend = options.resolve(resolved.path)
        if search == "ortgenai" and self.backend != "ortgenai":
            raise InvalidParameterError("search", f"ORT GenAI's own search needs the ortgenai engine; "
                                                  f"{model} runs on {self.backend}")
        self.search = search
        self.model = load_model(resolved.path, options)
        self.info = self.model.info
        self.tokenizer = self.model.tokenizer
        self.runner = self.model.create_runner(
            context_length=context_length, max_sequences=max_sequences, threads=threads
        )
        self.draft = None
        if draft_model:
            try:
                drafter = store.resolve(draft_model)
                self.draft = load_draft_model(drafter.name, drafter.path, options, target_name=self.name,
                                              target_tokenizer=self.tokenizer, target_runner=self.runner,
                                              threads=threads)
            except Exception:
                self.close()
                raise
        self.load_seconds = time.perf_counter() - started
        self.formatter = PromptFormatter(
            self.tokenizer, architecture=self.info.architecture,
            template=self.manifest.template or self.info.chat_template,
            system_prompt=system_prompt if system_prompt is not None else self.manifest.system,
            model_name=self.name, vision=getattr(self.model, "vision", None),
            preset_messages=self.manifest.messages,
        )
        self.default_params = SamplingParams.from_dict(self.manifest.parameters)
        self._free_seq_ids = list(range(max_sequences - 1, -1, -1))

    @property
    def system_prompt(self) -> str | None:
        return self.formatter.system_prompt

    @system_prompt.setter
    def system_prompt(self, value: str | None) -> None:
        self.formatter.system_prompt = value

    @property
    def chat_template(self) -> ChatTemplate:
        return self.formatter.chat_template

    @property
    def context_length(self) -> int:
        return self.runner.context_length

    # -- text -> tokens -------------------------------------------------------------------
    def apply_chat_template(self, messages: Sequence[Message | dict], *, add_generation_prompt: bool = True,
                            tools: Sequence[Tool] = ()) -> str:
        return self.formatter.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                  tools=tools)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Tokens of a raw prompt: BOS if the model wants it (and the text does not start with it)."""
        return self.formatter.encode_prompt(prompt)

    # -- generation -----------------------------------------------------------------------
    @property
    def supports_images(self) -> bool:
        return self.formatter.vision is not None

    def generate(self, prompt: str | Sequence[int], params: SamplingParams | None = None, *,
                 stream: bool = False, images: Sequence[ImageInput] = (),
                 num_crops: int | None = None) -> RequestOutput | Iterator[RequestOutput]:
        """Complete a raw prompt (text or token ids). With ``stream=True``, yields deltas.
        A vision model's prompt text holds ``<|image_1|>`` ... tags for ``images``."""
        if isinstance(prompt, str):
            encoded = self.formatter.encode_prompt_with_images(prompt, images, num_crops=num_crops)
        elif images:
            raise InvalidParameterError("images", "images need a text prompt with <|image_N|> tags, not token ids")
        elif _is_token_ids(prompt):
            encoded = EncodedPrompt([int(t) for t in prompt])
        else:
            raise InvalidParameterError(
                "prompt", "must be a string or a list of token ids; for several prompts, call generate once "
                "per prompt (slm serve batches concurrent requests)")
        return self._submit(encoded, params, stream)

    def chat(self, messages: Sequence[Message | dict], params: SamplingParams | None = None, *,
             stream: bool = False, images: Sequence[ImageInput] = (),
             num_crops: int | None = None) -> RequestOutput | Iterator[RequestOutput]:
        """Answer a conversation through the model's chat template.

        A vision model reads OpenAI-style image parts in the messages and ``images`` (file paths,
        encoded bytes, PIL images), which go at the start of the last user message unless its text
        places them with ``<|image_N|>`` tags (numbered after the image parts). ``num_crops``
        overrides the model's crops per image (``preprocessor_config.json``; fewer is faster).
        With ``params.tools`` the tools go into the prompt and the result carries the parsed
        ``tool_calls`` (finish reason ``tool_calls``); streamed, the last delta carries them.
        """
        if not messages:
            raise InvalidParameterError("messages", "at least one message is needed")
        params = params or self.default_params
        tools = params.tools if params.structure.calls_tools else []
        if not tools:
            return self._submit(self.formatter.encode_with_images(messages, images, num_crops=num_crops), params,
                                stream)
        if images:
            raise InvalidParameterError("images", "tool calls take text conversations; send images without tools")
        result = self._submit(EncodedPrompt(self.formatter.encode_chat(messages, tools=tools)), params, stream)
        return with_tool_calls(result) if stream else next(with_tool_calls(iter([result])))

    def generator(self, params: SamplingParams | None = None) -> Generator:
        """A token-by-token `Generator` (ONNX Runtime GenAI style) on a free sequence slot."""
        if not self._free_seq_ids:
            raise InvalidRequestError(
                f"all {self.runner.max_sequences} sequence slots are in use; close() a generator first"
            )
        if self.search == "ortgenai":
            from slmkit.backends.ortgenai_search import OrtGenAISearch

            return OrtGenAISearch(self.model, params or self.default_params, context_length=self.context_length,
                                  end_token_ids=self.tokenizer.special.end_of_generation,
                                  seq_id=self._free_seq_ids.pop(), on_close=self._free_seq_ids.append)
        return Generator(self.runner, params or self.default_params,
                         end_token_ids=self.tokenizer.special.end_of_generation,
                         seq_id=self._free_seq_ids.pop(), on_close=self._free_seq_ids.append,
                         constraint=make_constraint(self.tokenizer, params or self.default_params,
                                                    self.runner.vocab_size))

    @contextmanager
    def scorer(self) -> Iterator[Scorer]:
        """A `Scorer` on a free sequence slot: log-likelihoods of given text (perplexity,
        multiple choice), for as long as the ``with`` block lasts."""
        if not self._free_seq_ids:
            raise InvalidRequestError(f"all {self.runner.max_sequences} sequence slots are in use")
        seq_id = self._free_seq_ids.pop()
        try:
            yield Scorer(self.runner, seq_id)
        finally:
            self.runner.free(seq_id)
            self._free_seq_ids.append(seq_id)

    def _submit(self, prompt: EncodedPrompt, params: SamplingParams | None, stream: bool):
        params = params or self.default_params
        if not isinstance(params, SamplingParams):
            raise InvalidParameterError("params", f"must be a SamplingParams, got {type(params).__name__}")
        prompt_ids = prompt.token_ids
        if not prompt_ids:
            raise InvalidParameterError("prompt", "the prompt is empty")
        check_fits(len(prompt_ids), params.max_tokens, context_length=self.context_length)
        if params.num_beams > 1:
            if prompt.embeddings:
                raise InvalidParameterError("num_beams", "beam search does not take images; sample instead")
            results = self._ortgenai_beams(prompt_ids, params) if self.search == "ortgenai" else \
                self._beam_search(prompt_ids, params)
            return iter(results[:1]) if stream else results[0]
        deltas = self._stream(prompt_ids, params, prompt.embeddings, prompt.encode_seconds)
        first = next(deltas)  # errors such as a too-long prompt surface here, not mid-iteration
        if stream:
            return chain_outputs(first, deltas)
        return join_outputs([first, *deltas])

    def _stream(self, prompt_ids: list[int], params: SamplingParams, embeddings: Sequence[EmbeddingSpan] = (),
                encode_seconds: float = 0.0) -> Iterator[RequestOutput]:
        request_id = f"req-{uuid.uuid4().hex[:12]}"
        mode = params.speculative or self.speculative
        if mode == "draft" and self.draft is None:
            raise InvalidParameterError("speculative", DRAFT_NEEDS_MODEL)
        # ORT GenAI's own search runs inside its Generator: nothing for drafts to go through; image
        # prompts keep the Generator, which feeds their embedding rows.
        if mode != "off" and self.search != "ortgenai" and not embeddings:
            yield from self._stream_speculative(prompt_ids, params.updated(speculative=mode), request_id)
            return
        text = TextStream(self.tokenizer.token_bytes, params.stop)
        end_ids = params.end_token_ids(self.tokenizer.special.end_of_generation)
        started = time.perf_counter() - encode_seconds  # the time to first token includes the images
        first_token_at = None
        with self.generator(params) as gen:
            gen.append_tokens(prompt_ids, embeddings)
            yield RequestOutput("", [], request_id=request_id)
            while not gen.is_done():
                token = gen.generate_next_token()
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                delta = "" if (gen.is_done() and token in end_ids) else text.add(token)
                if text.stopped:
                    gen.finish_reason = "stop"
                yield RequestOutput(delta, [token], request_id=request_id)
                if text.stopped:
                    break
            finished = time.perf_counter()
            first_token_at = first_token_at or finished
            yield RequestOutput(
                text.finish(), [], finish_reason=gen.finish_reason, request_id=request_id,
                usage=Usage(len(prompt_ids), gen.generated_count),
                timings=Timings(prefill_seconds=first_token_at - started,
                                decode_seconds=finished - first_token_at,
                                time_to_first_token=first_token_at - started),
            )

    def _stream_speculative(self, prompt_ids: list[int], params: SamplingParams,
                            request_id: str) -> Iterator[RequestOutput]:
        """The request through the batching engine on one free slot (of the draft model's runner
        too): its drafts are verified exactly as `slm serve` does, so the tokens are those of
        `_stream`."""
        if not self._free_seq_ids:
            raise InvalidRequestError(f"all {self.runner.max_sequences} sequence slots are in use")
        seq_id = self._free_seq_ids.pop()
        draft_slot = None if self.draft is None else OneSlot(self.draft.runner, seq_id)
        engine = Engine(OneSlot(self.runner, seq_id), self.tokenizer, prefix_caching=False, draft_runner=draft_slot)
        outputs: list[RequestOutput] = []
        try:
            self.runner.free(seq_id)
            if draft_slot is not None:
                draft_slot.free(0)
            engine.add_request(Request(prompt_ids, params, request_id), outputs.append)
            yield RequestOutput("", [], request_id=request_id)
            while engine.has_work:
                engine.step()
                for out in outputs:
                    if out.error is not None:
                        raise out.error
                    yield out
                outputs.clear()
        finally:
            engine.abort_all()
            self.runner.free(seq_id)
            if draft_slot is not None:
                draft_slot.free(0)
            self._free_seq_ids.append(seq_id)

    def _beam_search(self, prompt_ids: list[int], params: SamplingParams) -> list[RequestOutput]:
        needed = 2 * params.num_beams
        if len(self._free_seq_ids) < needed:
            raise InvalidParameterError(
                "num_beams", f"{params.num_beams} beams need {needed} free sequence slots; "
                f"{len(self._free_seq_ids)} are free (raise max_sequences)"
            )
        seq_ids = [self._free_seq_ids.pop() for _ in range(needed)]
        started = time.perf_counter()
        try:
            end_ids = params.end_token_ids(self.tokenizer.special.end_of_generation)
            beams = beam_search(self.runner, prompt_ids, params, end_ids, seq_ids)
        finally:
            self._free_seq_ids.extend(seq_ids)
        elapsed = time.perf_counter() - started
        return [self._beam_output(prompt_ids, beam.token_ids, params, elapsed, index) for index, beam in enumerate(beams)]

    def _ortgenai_beams(self, prompt_ids: list[int], params: SamplingParams) -> list[RequestOutput]:
        """Beam search inside ORT GenAI (``search="ortgenai"``): its best beam."""
        started = time.perf_counter()
        with self.generator(params) as gen:
            gen.append_tokens(prompt_ids)
            gen.generate_next_token()
            tokens = gen.generated_tokens
        return [self._beam_output(prompt_ids, tokens, params, time.perf_counter() - started, 0)]

    def _beam_output(self, prompt_ids, token_ids, params: SamplingParams, elapsed: float, index: int) -> RequestOutput:
        end_ids = params.end_token_ids(self.tokenizer.special.end_of_generation)
        text = TextStream(self.tokenizer.token_bytes, params.stop)
        pieces = [text.add(t) for t in token_ids if t not in end_ids]
        finish = "stop" if (token_ids and token_ids[-1] in end_ids) or text.stopped else "length"
        return RequestOutput("".join(pieces) + text.finish(), list(token_ids), finish,
                             Usage(len(prompt_ids), len(token_ids)), Timings(decode_seconds=elapsed), index=index)

    def close(self) -> None:
        if getattr(self, "draft", None) is not None:
            self.draft.close()
            self.draft = None
        self.runner.close()
        self.model.close()

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def with_tool_calls(deltas: Iterator[RequestOutput]) -> Iterator[RequestOutput]:
    """The deltas as they come; the last one also carries the complete calls parsed from the whole
    text (and finish reason ``tool_calls`` when there are any and the reply was not cut short)."""
    pieces = []
    for delta in deltas:
        pieces.append(delta.text)
        if delta.finished and delta.finish_reason in ("stop", "length"):
            content, calls = parse_tool_calls("".join(pieces))
            if calls:
                delta.tool_calls = calls
                delta.finish_reason = "tool_calls" if delta.finish_reason == "stop" else "length"
                if len(pieces) == 1:  # a whole result: its text is the content outside the calls
                    delta.text = content
        yield delta


def _is_token_ids(prompt) -> bool:
    if isinstance(prompt, (bytes, dict)) or not hasattr(prompt, "__iter__"):
        return False
    return all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in prompt)

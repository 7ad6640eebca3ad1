"""Translation and summarization end to end on the bundled models (structure, not quality:
SmolLM2-135M translates and summarizes poorly, but its answers must be well-formed)."""

from __future__ import annotations

import pytest

from slmkit.tasks.prompting import clean_answer, follows_instructions
from slmkit.tasks.summarize import SummaryForm, summarize
from slmkit.tasks.translate import iter_translation, language_name, translate
from slmkit.types import SamplingParams
from test_cli import assert_one_line_error, slm

GREEDY = SamplingParams(temperature=0.0, max_tokens=32)

FACTS = [
    "The river Arno flows through Florence.", "Florence was the centre of the Renaissance.",
    "The Medici family ruled the city for generations.", "Michelangelo carved David from one block of marble.",
    "The cathedral dome was designed by Brunelleschi.", "Tourists visit the Uffizi gallery every day.",
    "A football match in costume is played each June.", "Leather goods are sold at the San Lorenzo market.",
]


def assert_clean(text: str, *instruction_words: str) -> None:
    assert text.strip() and text == text.strip()
    lowered = text.lower()
    assert not lowered.startswith(("translation", "summary", "here is", "here's", "sure", "tl;dr"))
    for word in instruction_words:
        assert word.lower() not in lowered, text  # the prompt is not echoed


def test_clean_answer_leaves_only_the_answer():
    assert clean_answer('Sure! Here is the translation:\n"Bonjour le monde"') == "Bonjour le monde"
    assert clean_answer("French translation: Bonjour.\n\nNote: this is informal.") == "Bonjour."
    assert clean_answer("**Summary:** Florence is old.") == "Florence is old."
    assert clean_answer("Translate this to French.\n\nBonjour.", "Translate this to French.") == "Bonjour."
    assert clean_answer("Bonjour le monde") == "Bonjour le monde"


def test_language_names():
    assert language_name("fr") == language_name("FR") == language_name("fr-CA") == "French"
    assert language_name("Brazilian Portuguese") == "Brazilian Portuguese"


def test_translate_short_text(llm):
    assert follows_instructions(llm)
    out = translate(llm, "Good morning. How are you today?", to="fr", source="en", params=GREEDY)
    assert_clean(out, "translate", "reply with")
    assert "\n" not in out  # one paragraph in, one out: no notes after it


def test_long_translation_goes_piece_by_piece_and_keeps_paragraphs(llm):
    text = " ".join(FACTS[:2]) + "\n\n" + " ".join(FACTS[4:6])
    progress = []
    pieces = list(iter_translation(llm, text, to="de", params=GREEDY.updated(max_tokens=20), chunk_tokens=14,
                                   on_progress=lambda done, total: progress.append((done, total))))
    assert len(pieces) >= 4 and progress[-1][0] == progress[-1][1] == len(pieces)
    assert all(piece.strip() for piece in pieces)
    joined = "".join(pieces).strip()
    assert joined.count("\n\n") == 1  # the paragraph break survives, nothing else adds one
    assert_clean(joined, "translate", "reply with")


def test_translation_prompt_for_a_base_model(slmkit_home):
    from slmkit import LLM

    with LLM("gemma3-270m", context_length=512) as base:
        assert not follows_instructions(base)  # no chat template of its own: a completion cue instead
        out = translate(base, "The weather is nice today.", to="fr", source="en", params=GREEDY.updated(max_tokens=24))
    assert_clean(out, "translate", "french:", "english:")


def test_short_text_is_summarized_in_one_pass(llm):
    summary = summarize(llm, " ".join(FACTS), bullets=3, params=GREEDY.updated(max_tokens=48))
    assert (summary.chunks, summary.map_calls, summary.total_calls) == (1, 0, 1)
    lines = summary.text.splitlines()
    assert 1 <= len(lines) <= 3 and all(line.startswith("- ") and len(line) > 3 for line in lines)


def test_long_text_is_summarized_map_reduce(llm):
    text = "\n\n".join(" ".join(FACTS[i:] + FACTS[:i]) for i in range(3))  # ~270 tokens
    progress = []
    summary = summarize(llm, text, words=25, params=GREEDY.updated(max_tokens=24), context_length=256,
                        on_progress=lambda done, total: progress.append((done, total)))
    assert summary.chunks >= 2 and summary.map_calls == summary.chunks
    assert summary.total_calls == summary.map_calls + summary.collapse_calls + 1
    assert [done for done, _ in progress] == list(range(1, summary.total_calls + 1))
    assert progress[-1][1] == summary.total_calls
    assert_clean(summary.text, "summarize")
    assert len(summary.text.split()) <= 26  # 25 words, or 25 and an ellipsis


def test_summary_form_is_enforced():
    assert SummaryForm(bullets=2).enforce("One. Two. Three.") == "- One.\n- Two."
    assert SummaryForm(bullets=2).enforce("* a\n1. b\n- c") == "- a\n- b"
    assert SummaryForm(words=4).enforce("One two three. Four five six.") == "One two three."
    with pytest.raises(Exception, match="either"):
        SummaryForm(words=3, bullets=2)


def test_cli_translate_and_summarize(tmp_path):
    result = slm("translate", "--to", "fr", "--from", "en", "Good night.", "-m", "smollm2", "-n", "16")
    assert result.returncode == 0, result.stderr
    assert_clean(result.stdout.strip(), "translate")

    doc = tmp_path / "doc.txt"
    doc.write_text(" ".join(FACTS))
    result = slm("summarize", str(doc), "--bullets", "2", "--verbose", "-n", "40")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert 1 <= len(lines) <= 2 and all(line.startswith("- ") for line in lines)
    assert "summarizing: done" in result.stderr and "1 piece(s)" in result.stderr

    result = slm("summarize", "-", "--words", "10", "-n", "24", stdin=" ".join(FACTS))
    assert result.returncode == 0, result.stderr
    assert 0 < len(result.stdout.split()) <= 11


def test_cli_task_errors(tmp_path):
    assert_one_line_error(slm("summarize", str(tmp_path / "missing.txt")), "no such file")
    assert_one_line_error(slm("translate", "--to", "fr", stdin="   "), "nothing to translate")
    assert slm("translate", "hello").returncode == 2  # --to is required (typer's usage error)


@pytest.mark.slow
def test_remote_model_through_a_real_server(server, llm, monkeypatch):
    """`openai:smollm2` served by `slm serve`: no tokenizer at hand, so budgets are estimated."""
    from slmkit import LLM

    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.base}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    remote = LLM("openai:smollm2")
    text = "Good morning. How are you today?"
    assert translate(remote, text, to="fr", params=GREEDY) == translate(llm, text, to="fr", params=GREEDY)
    summary = summarize(remote, "\n\n".join([" ".join(FACTS)] * 2), words=20, params=GREEDY.updated(max_tokens=24),
                        context_length=200)
    assert summary.map_calls >= 2 and summary.total_calls == summary.map_calls + summary.collapse_calls + 1
    assert_clean(summary.text, "summarize")

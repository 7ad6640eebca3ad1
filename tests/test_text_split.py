"""The splitter behind translation and summarization: lossless, sentence-whole, within budget."""

from __future__ import annotations

import pytest

from slmkit.tasks.text_split import TokenBudget, chunk_text, estimate_tokens, split_paragraphs, split_sentences

TOPICS = ["the river", "the old bridge", "the market", "the cathedral", "the harbour", "the museum"]


def long_text(paragraphs: int = 12) -> tuple[str, list[str]]:
    """A text of known sentences (each unique, some with abbreviations and quotes), and the list."""
    sentences = []
    parts = []
    for p in range(paragraphs):
        para = []
        for i, topic in enumerate(TOPICS):
            n = p * len(TOPICS) + i
            sentence = [
                f"Sentence {n} is about {topic}, which Dr. Rossi described in {1800 + n}.",
                f"Why did {topic} matter so much to the town in year {n}?",
                f"\"It was everything to us,\" said witness number {n}!",
                f"Visitors still come to see {topic} every day of week {n}, e.g. on Sundays.",
            ][n % 4]
            sentences.append(sentence)
            para.append(sentence)
        parts.append(" ".join(para))
    return "\n\n".join(parts), sentences


def test_sentences_join_back_and_respect_abbreviations():
    text = 'Dr. Smith went to Washington. He said: "Hi!" Then he left… e.g. this stays.\n\nNew line? 你好。世界！ok'
    sentences = split_sentences(text)
    assert "".join(sentences) == text
    assert [s.strip() for s in sentences] == [
        "Dr. Smith went to Washington.", 'He said: "Hi!"', "Then he left…", "e.g. this stays.",
        "New line?", "你好。", "世界！", "ok",
    ]
    assert "".join(split_paragraphs(text)) == text
    assert len(split_paragraphs(text)) == 2


@pytest.mark.parametrize("budget", [30, 80, 200])
def test_every_sentence_in_exactly_one_chunk_in_order_within_budget(llm, budget):
    text, sentences = long_text()
    count = TokenBudget.for_model(llm).count
    assert max(count(s + " ") for s in sentences) <= budget  # each fits whole, so none is cut
    chunks = chunk_text(text, budget, count)
    assert len(chunks) > 1
    assert "".join(chunks) == text  # nothing lost, nothing repeated, order kept
    assert all(count(chunk) <= budget for chunk in chunks)
    where = []
    for sentence in sentences:
        holders = [i for i, chunk in enumerate(chunks) if sentence in chunk]
        assert len(holders) == 1, (sentence, holders)
        where.append(holders[0])
    assert where == sorted(where)
    # Greedy packing: no chunk could have taken the next one's first sentence.
    for chunk, following in zip(chunks, chunks[1:]):
        first = split_sentences(following)[0]
        assert count(chunk + first) > budget


def test_budget_with_another_tokenizer_and_with_the_estimate(slmkit_home):
    from slmkit.backends.llamacpp import LlamaCppModel
    from slmkit.store.store import ModelStore

    store = ModelStore()
    store.pull("gemma3-270m")
    vocab = LlamaCppModel(store.resolve("gemma3-270m").path, vocab_only=True)
    try:
        text, _ = long_text(4)
        for count in (lambda t: len(vocab.tokenizer.encode(t, add_special=False)), estimate_tokens):
            chunks = chunk_text(text, 50, count)
            assert "".join(chunks) == text and all(count(c) <= 50 for c in chunks)
    finally:
        vocab.close()


def test_overlong_sentence_is_cut_at_words_then_characters():
    count = estimate_tokens  # 4 characters a token
    text = "word " * 40 + "x" * 50 + ". Short one."
    chunks = chunk_text(text, 10, count)
    assert "".join(chunks) == text
    assert all(count(c) <= 10 for c in chunks)
    assert chunks[0] == "word " * 8


def test_remote_models_estimate_from_characters():
    from slmkit.remote_llm import RemoteLLM

    remote = RemoteLLM("ollama:smollm2")  # no request is made: only the budget is asked for
    budget = TokenBudget.for_model(remote)
    assert not budget.exact and budget.context_length == 4096
    assert budget.count("a" * 40) == 10
    assert TokenBudget.for_model(remote, context_length=1000).context_length == 1000


def test_local_budget_counts_exactly_and_never_exceeds_the_model(llm):
    budget = TokenBudget.for_model(llm, context_length=100_000)
    assert budget.exact and budget.context_length == llm.context_length
    assert budget.count("Hello world") == len(llm.tokenizer.encode("Hello world", add_special=False))
    from slmkit.types import Message

    assert budget.count_messages([Message("user", "Hello world")]) > budget.count("Hello world") + 4

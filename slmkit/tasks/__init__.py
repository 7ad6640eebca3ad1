"""Tasks over any model with a chat() method: translation, summarization, speech."""

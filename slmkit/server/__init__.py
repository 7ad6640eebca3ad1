"""`slm serve`: the OpenAI, Ollama and Azure AI Inference APIs over the batching engine."""

"""Images for vision models: decoding with safety checks, the Phi-3-vision HD processor, image
prompts (placeholders -> token positions) and video frames."""

"""Image prompts: ``<|image_N|>`` placeholders in text become runs of placeholder tokens whose
embeddings the model replaces with image N's features.

As the released Phi-3-vision processor does, the text between placeholders is tokenized piece by
piece (each piece gets the tokenizer's BOS if it adds one), and image N takes
``num_image_tokens`` positions where its tag stands. Chat messages are turned into such text
first: each image part becomes its tag, in order, where the part stands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from slmkit.errors import InvalidParameterError
from slmkit.types import ImagePart, Message, TextPart

IMAGE_TAG = re.compile(r"<\|image_(\d+)\|>")


@dataclass
class ImageSlot:
    """Image ``index`` (0-based) fills positions ``start .. start + length - 1``."""

    index: int
    start: int
    length: int


@dataclass
class TaggedMessages:
    """Messages with every image part replaced by its ``<|image_N|>`` tag, and the images in tag order."""

    messages: list[Message]
    images: list[object]  # ImagePart or whatever the caller gave (path, bytes, PIL image)
    names: list[str]  # what an error calls each image: "messages[1].content[2]", a path, "images[0]"


def tag_images(messages: Sequence[Message | dict], extra_images: Sequence[object] = ()) -> TaggedMessages:
    """Image parts become ``<|image_N|>\\n`` where they stand (numbered across the conversation);
    ``extra_images`` continue the numbering, and those whose tag the text does not already hold
    go at the start of the last user message."""
    tagged, images, names = [], [], []
    for i, message in enumerate(Message.coerce(m) for m in messages):
        if isinstance(message.content, str):
            tagged.append(message)
            continue
        pieces = []
        for j, part in enumerate(message.content):
            if isinstance(part, ImagePart):
                images.append(part)
                names.append(f"messages[{i}].content[{j}]")
                pieces.append(f"<|image_{len(images)}|>\n")
            elif isinstance(part, TextPart):
                pieces.append(part.text)
        tagged.append(Message(message.role, "".join(pieces)))
    first_extra = len(images) + 1
    images.extend(extra_images)
    names.extend(image if isinstance(image, str) else getattr(image, "name", None) or f"images[{k}]"
                 for k, image in enumerate(extra_images))
    written = {int(n) for m in tagged for n in IMAGE_TAG.findall(m.text)}
    missing = "".join(f"<|image_{n}|>\n" for n in range(first_extra, len(images) + 1) if n not in written)
    if missing:
        users = [i for i, m in enumerate(tagged) if m.role == "user"]
        if not users:
            raise InvalidParameterError("images", "images need a user message to go with")
        last = tagged[users[-1]]
        tagged[users[-1]] = Message(last.role, missing + last.text)
    return TaggedMessages(tagged, images, names)


def image_token_ids(text: str, image_lengths: Sequence[int], encode: Callable[[str], list[int]],
                    placeholder_id: int) -> tuple[list[int], list[ImageSlot]]:
    """Token ids of ``text`` with image N's ``image_lengths[N-1]`` placeholder tokens at its tag."""
    tags = [int(n) for n in IMAGE_TAG.findall(text)]
    if sorted(tags) != list(range(1, len(image_lengths) + 1)):
        raise InvalidParameterError(
            "images", f"the prompt has image tags {[f'<|image_{n}|>' for n in tags]} for {len(image_lengths)} "
            f"image(s); each of <|image_1|> .. <|image_{len(image_lengths)}|> must appear exactly once")
    ids: list[int] = []
    slots: list[ImageSlot] = []
    pieces = IMAGE_TAG.split(text)  # text, tag number, text, tag number, ..., text
    for i, piece in enumerate(pieces):
        if i % 2:
            index = int(piece) - 1
            slots.append(ImageSlot(index, len(ids), image_lengths[index]))
            ids.extend([placeholder_id] * image_lengths[index])
        else:  # empty pieces too: the reference gives them the BOS a tokenizer adds
            ids.extend(encode(piece))
    return ids, slots

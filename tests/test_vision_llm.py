"""A tiny random Phi-3-vision checkpoint (released layout) end to end through the Python API:
images as paths, bytes, PIL images and data-URL parts; one and two images; video frames; the
text-only path equal to the Phi-3 language model alone; bad images refused by name."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("av")

from PIL import Image  # noqa: E402

from slmkit import LLM, SamplingParams  # noqa: E402
from slmkit.errors import InvalidParameterError  # noqa: E402
from slmkit.types import ImagePart, Message  # noqa: E402
from slmkit.vision.video import evenly_spaced, sample_frames  # noqa: E402
from tests.vision_fixtures import write_text_half, write_tiny_vision_checkpoint  # noqa: E402
from tests.vision_media import write_media  # noqa: E402

GREEDY = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
QUESTION = [{"role": "user", "content": "What is in the picture?"}]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("vision")
    vision = write_tiny_vision_checkpoint(root / "tiny-phi3-vision", num_crops=4)
    return vision, write_text_half(vision, root / "tiny-phi3-text"), write_media(root / "media")


@pytest.fixture(scope="module")
def vlm(folders):
    with LLM(str(folders[0]), max_sequences=2) as llm:
        yield llm


@pytest.fixture(scope="module")
def text_tokens(vlm):
    """The tokens of QUESTION through the chat template, without images."""
    return len(vlm.encode_prompt(vlm.apply_chat_template(QUESTION)))


def first_logprobs(llm, images=(), num_crops=None):
    """(prompt tokens, the five largest first-step logits) of QUESTION with ``images``."""
    prompt = llm.formatter.encode_with_images(QUESTION, images, num_crops=num_crops)
    with llm.generator(GREEDY) as gen:
        gen.append_tokens(prompt.token_ids, prompt.embeddings)
        logits = gen.get_logits()
    return len(prompt.token_ids), sorted(round(float(x), 4) for x in logits)[-5:]


def tokens_around_one_image(llm, text: str = "What is in the picture?") -> int:
    """Text tokens of a one-image question: the template's text on either side of the tag."""
    rendered = llm.chat_template.render([Message("user", f"<|image_1|>\n{text}")], add_generation_prompt=True)
    return sum(len(llm.encode_prompt(piece)) for piece in rendered.split("<|image_1|>"))


def test_text_only_prompt_is_exactly_the_phi3_language_model(folders, vlm, text_tokens):
    assert vlm.supports_images and vlm.info.architecture == "phi3_v"
    with LLM(str(folders[1]), max_sequences=1) as text:
        assert not text.supports_images
        expected = text.chat(QUESTION, GREEDY)
    got = vlm.chat(QUESTION, GREEDY)
    assert got.token_ids == expected.token_ids and got.text == expected.text
    assert got.usage.prompt_tokens == expected.usage.prompt_tokens == text_tokens


def test_one_image_as_path_bytes_pil_or_part_gives_one_answer(folders, vlm, text_tokens):
    media = folders[2]
    photo = media["photo.png"]
    by_path = vlm.chat(QUESTION, GREEDY, images=[str(photo)])
    assert by_path.usage.prompt_tokens == tokens_around_one_image(vlm) + 757  # 640x480, 4 crops: 2x2
    assert vlm.chat(QUESTION, GREEDY, images=[photo.read_bytes()]).token_ids == by_path.token_ids
    assert vlm.chat(QUESTION, GREEDY, images=[Image.open(photo)]).token_ids == by_path.token_ids
    part = [{"role": "user", "content": [ImagePart.from_file(photo).to_dict(),
                                         {"type": "text", "text": "What is in the picture?"}]}]
    assert vlm.chat(part, GREEDY).token_ids == by_path.token_ids
    assert vlm.chat(QUESTION, GREEDY, images=[str(photo)]).token_ids == by_path.token_ids  # deterministic


def test_the_image_reaches_the_model(folders, vlm, text_tokens):
    media = folders[2]
    none, photo, chart = (first_logprobs(vlm), first_logprobs(vlm, images=[str(media["photo.png"])]),
                          first_logprobs(vlm, images=[str(media["chart.jpg"])]))
    assert none[1] != photo[1] != chart[1] != none[1]
    assert photo[0] - chart[0] == 757 - ((3 * 1 + 1) * 144 + 1 + 4 * 12)  # 300x900 portrait: 3 rows x 1 column
    fewer = first_logprobs(vlm, images=[str(media["photo.png"])], num_crops=1)
    assert photo[0] - fewer[0] == 757 - ((1 + 1) * 144 + 1 + 2 * 12)


def test_two_images_and_a_conversation(folders, vlm):
    media = folders[2]
    two = vlm.chat([{"role": "user", "content": "Compare <|image_1|> with <|image_2|>."}], GREEDY,
                   images=[str(media["photo.png"]), str(media["chart.jpg"])])
    swapped = vlm.chat([{"role": "user", "content": "Compare <|image_1|> with <|image_2|>."}], GREEDY,
                       images=[str(media["chart.jpg"]), str(media["photo.png"])])
    assert two.usage.prompt_tokens == swapped.usage.prompt_tokens > 757 + 625
    assert two.finish_reason == "length" and len(two.token_ids) == 12
    photo = ImagePart.from_file(media["photo.png"]).to_dict()
    conversation = [{"role": "user", "content": [photo, {"type": "text", "text": "What is this?"}]},
                    {"role": "assistant", "content": "A gradient."},
                    {"role": "user", "content": "And this one?"}]
    out = vlm.chat(conversation, GREEDY, images=[str(media["chart.jpg"])])
    assert out.usage.prompt_tokens > 757 + 625


def test_video_frames_are_sampled_evenly_and_answered(folders, vlm, text_tokens):
    media = folders[2]
    assert evenly_spaced(5, 3) == [0, 2, 4] and evenly_spaced(5, 9) == [0, 1, 2, 3, 4] and evenly_spaced(6, 1) == [3]
    for name, total in (("clip.gif", 5), ("clip.mp4", 6)):
        frames = sample_frames(media[name], 3)
        assert [f.name.rsplit(" ", 1)[1] for f in frames] == [str(i) for i in evenly_spaced(total, 3)]
        assert all(f.image.mode == "RGB" for f in frames)
        three = vlm.chat(QUESTION, GREEDY, images=frames, num_crops=1)
        one = vlm.chat(QUESTION, GREEDY, images=frames[:1], num_crops=1)
        per_frame = (1 + 1) * 144 + 1 + 2 * 12  # 160x120 with one crop
        added = one.usage.prompt_tokens - text_tokens  # the frame's rows plus its tag's newline
        assert per_frame <= added <= per_frame + 2
        assert three.usage.prompt_tokens - text_tokens == 3 * added
    gif = sample_frames(media["clip.gif"], 5)
    assert len({f.image.getpixel((0, 0)) for f in gif}) > 1  # the frames differ


@pytest.mark.parametrize("name, message", [("notes.png", "is not a PNG, JPEG"), ("cut.png", "damaged or truncated"),
                                           ("bomb.png", "megapixels"), ("scan.tiff", "is not a PNG, JPEG")])
def test_bad_images_are_refused_by_name(folders, vlm, name, message):
    path = str(folders[2][name])
    with pytest.raises(InvalidParameterError, match=message) as err:
        vlm.chat(QUESTION, GREEDY, images=[path])
    assert path in err.value.message
    with pytest.raises(InvalidParameterError, match=message) as err:  # as a data URL part: named by place
        vlm.chat([{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {
            "url": "data:image/png;base64," + __import__("base64").b64encode(folders[2][name].read_bytes()).decode()}}]}],
            GREEDY)
    assert "messages[0].content[1]" in err.value.message


def test_other_image_errors(folders, vlm):
    photo = str(folders[2]["photo.png"])
    with pytest.raises(InvalidParameterError, match="does not fetch images"):
        vlm.chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}])
    with pytest.raises(InvalidParameterError, match="limit is 16"):
        vlm.chat(QUESTION, GREEDY, images=[photo] * 17)
    with pytest.raises(InvalidParameterError, match="num_crops"):
        vlm.chat(QUESTION, GREEDY, images=[photo], num_crops=0)
    with pytest.raises(InvalidParameterError, match="exactly once"):
        vlm.generate("<|image_1|> and <|image_1|>", GREEDY, images=[photo])
    with pytest.raises(InvalidParameterError, match="does not exist"):
        sample_frames(folders[2]["photo.png"].with_name("missing.mp4"), 2)
    with pytest.raises(InvalidParameterError, match="cannot be decoded"):
        sample_frames(folders[2]["notes.png"], 2)
    assert vlm.chat(QUESTION, GREEDY, images=[photo]).finish_reason == "length"  # still serving


def test_a_text_only_model_refuses_images(folders):
    with LLM(str(folders[1]), max_sequences=1) as text:
        with pytest.raises(InvalidParameterError, match="no vision support"):
            text.chat(QUESTION, GREEDY, images=[str(folders[2]["photo.png"])])

"""The Phi-3-vision HD transform and image prompts: crop grids, padding, token counts over many
aspect ratios against the released formula, separator placement, placeholder expansion."""

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("PIL")

from slmkit.errors import InvalidParameterError  # noqa: E402
from slmkit.models.phi3_vision import Phi3ImageEmbedding, VisionConfig  # noqa: E402
from slmkit.vision.processor import CLIP_MEAN, CLIP_STD, hd_grid, preprocess  # noqa: E402
from slmkit.vision.prompt import image_token_ids, tag_images  # noqa: E402
from slmkit.types import ImagePart  # noqa: E402
from tests.vision_fixtures import SMALL_TOWER, gradient_image  # noqa: E402

# (width, height): square, wide, tall, tiny, extreme strips, photos, huge
SIZES = [(336, 336), (1, 1), (13, 7), (640, 480), (480, 640), (1920, 1080), (1080, 1920), (4000, 3000),
         (3000, 4000), (1000, 10), (10, 1000), (5376, 336), (2000, 200), (337, 336), (335, 336), (800, 801),
         (7000, 5000), (50, 2000), (1234, 567), (90, 160)]


def released_grid(width: int, height: int, num_crops: int) -> tuple[int, int]:
    """The released ``calc_hd_transform_size``, restated: (rows, cols) of the padded HD size."""
    transposed = width < height
    if transposed:
        width, height = height, width
    ratio = width / height
    scale = 1
    while scale * math.ceil(scale / ratio) <= num_crops:
        scale += 1
    scale -= 1
    new_width = scale * 336
    new_height = int(new_width / ratio)
    rows, cols = math.ceil(new_height / 336), new_width // 336
    return (cols, rows) if transposed else (rows, cols)


def formula(rows: int, cols: int) -> int:
    return (rows * cols + 1) * 144 + 1 + (rows + 1) * 12


@pytest.mark.parametrize("num_crops", [1, 4, 16])
@pytest.mark.parametrize("width, height", SIZES)
def test_crop_grid_and_token_count(width, height, num_crops):
    rows, cols = hd_grid(width, height, num_crops)
    assert (rows, cols) == released_grid(width, height, num_crops)
    assert 1 <= rows * cols <= num_crops
    vision = VisionConfig.from_hf({"img_processor": {"vision_config": {}}})
    assert vision.num_image_tokens(rows, cols) == formula(rows, cols)
    if width * height <= 4_000_000:  # the pixels themselves for all but the huge ones
        processed = preprocess(gradient_image(width, height), "img", num_crops)
        assert (processed.rows, processed.cols) == (rows, cols)
        assert processed.pixel_values.shape == (1 + rows * cols, 3, 336, 336)
        assert processed.hd_size == (rows * 336, cols * 336)


def test_the_width_fills_the_crops_and_the_height_is_padded_white():
    processed = preprocess(gradient_image(672, 300), "wide", 4)  # 2 crops across, 300 px high -> pad to 336
    assert (processed.rows, processed.cols) == (1, 2)
    white = torch.tensor([(1 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD)])
    crops = processed.pixel_values[1:]
    # padding: 18 rows on top, 18 below, every pixel white; the image rows are not white
    assert torch.allclose(crops[:, :, :18].permute(0, 2, 3, 1), white, atol=1e-6)
    assert torch.allclose(crops[:, :, -18:].permute(0, 2, 3, 1), white, atol=1e-6)
    assert not torch.allclose(crops[:, :, 18:-18].permute(0, 2, 3, 1), white, atol=1e-3)
    tall = preprocess(gradient_image(300, 672), "tall", 4)  # transposed: padding left and right
    assert (tall.rows, tall.cols) == (2, 1)
    assert torch.allclose(tall.pixel_values[1:, :, :, :18].permute(0, 2, 3, 1), white, atol=1e-6)


def test_separators_stand_where_the_reference_puts_them():
    torch.manual_seed(0)
    vision = VisionConfig.from_hf({"img_processor": {"image_dim_out": 32, "vision_config": SMALL_TOWER}})
    embed = Phi3ImageEmbedding(vision, hidden_size=16).eval()
    with torch.no_grad():
        embed.glb_GN.normal_()
        embed.sub_GN.normal_()
    processed = preprocess(gradient_image(700, 330), "x", 6)
    rows, cols = processed.rows, processed.cols
    assert (rows, cols) == (2, 3)
    with torch.no_grad():
        seq = embed.hd_sequence(processed.pixel_values, rows, cols)
        features = embed.img_processor.features(processed.pixel_values)
    assert seq.shape[0] == formula(rows, cols)
    width = 12 * cols + 1  # one separator ends every row of the crop grid
    sub, glb = embed.sub_GN.reshape(-1), embed.glb_GN.reshape(-1)
    for r in range(12 * rows):
        assert torch.equal(seq[r * width + width - 1], sub)
    grid_end = 12 * rows * width
    assert torch.equal(seq[grid_end], glb)
    for r in range(12):
        assert torch.equal(seq[grid_end + 1 + r * 13 + 12], sub)
    assert seq.shape[0] == grid_end + 1 + 12 * 13
    # the cell at grid row 0, column 12 is crop 2's first cell: its 2x2 patches (0,0),(0,1),(1,0),(1,1)
    crop2 = features[2].reshape(24, 24, -1)
    expected = torch.cat([crop2[0, 0], crop2[0, 1], crop2[1, 0], crop2[1, 1]])
    assert torch.equal(seq[12], expected)
    whole = features[0].reshape(24, 24, -1)  # global view's last cell, before its row separator
    assert torch.equal(seq[grid_end + 1 + 11 * 13 + 11], torch.cat([whole[22, 22], whole[22, 23], whole[23, 22],
                                                                      whole[23, 23]]))


def test_placeholders_expand_per_image_and_text_pieces_are_encoded_apart():
    pieces = []

    def encode(text):  # a tokenizer that adds BOS (9) to every piece, as the released one does
        pieces.append(text)
        return [9] + [ord(c) for c in text]

    ids, slots = image_token_ids("A<|image_1|>B<|image_2|>", [3, 2], encode, placeholder_id=0)
    assert pieces == ["A", "B", ""]
    assert ids == [9, 65, 0, 0, 0, 9, 66, 0, 0, 9]
    assert [(s.index, s.start, s.length) for s in slots] == [(0, 2, 3), (1, 7, 2)]
    ids, slots = image_token_ids("<|image_2|> then <|image_1|>", [1, 2], lambda t: list(map(ord, t)), 0)
    assert [(s.index, s.start, s.length) for s in slots] == [(1, 0, 2), (0, 8, 1)]


@pytest.mark.parametrize("text, count", [("<|image_1|><|image_1|>", 1), ("<|image_2|>", 1), ("no tags", 1),
                                         ("<|image_1|>", 2), ("<|image_0|>", 1)])
def test_tags_must_match_the_images(text, count):
    with pytest.raises(InvalidParameterError, match="must appear exactly once"):
        image_token_ids(text, [5] * count, lambda t: [1], 0)


def test_image_parts_become_tags_in_order_and_extra_images_join_the_last_user_message():
    url = ImagePart("data:image/png;base64,AAAA")
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "First: "}, url.to_dict(),
                                             {"type": "text", "text": " and "}, url.to_dict()]},
                {"role": "assistant", "content": "Two cats."},
                {"role": "user", "content": "And this one?"}]
    tagged = tag_images(messages, ["photo.png"])
    assert [m.text for m in tagged.messages] == [
        "Be brief.", "First: <|image_1|>\n and <|image_2|>\n", "Two cats.", "<|image_3|>\nAnd this one?"]
    assert tagged.images == [url, url, "photo.png"]
    spelled = tag_images([{"role": "user", "content": "Compare <|image_1|> with <|image_2|>"}], ["a", "b"])
    assert spelled.messages[0].text == "Compare <|image_1|> with <|image_2|>"

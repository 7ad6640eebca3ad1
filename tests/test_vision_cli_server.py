"""The tiny Phi-3-vision checkpoint through `slm run` (--image, --video, /image) and `slm serve`
(OpenAI and Azure image_url data URLs, Ollama images), after `slm import` and as a bare folder;
answers equal the Python API's, bad images are a one-line error or a 400 and the server goes on."""

from __future__ import annotations

import base64
import subprocess

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("av")

import ollama  # noqa: E402
import openai  # noqa: E402
from server_process import SLM, ServerProcess  # noqa: E402

from slmkit import LLM, SamplingParams  # noqa: E402
from tests.vision_fixtures import write_tiny_vision_checkpoint  # noqa: E402
from tests.vision_media import write_media  # noqa: E402

QUESTION = "What is in the picture?"
TOKENS = 10


@pytest.fixture(scope="module")
def setup(tmp_path_factory, slmkit_home):
    root = tmp_path_factory.mktemp("vision-cli")
    folder = write_tiny_vision_checkpoint(root / "tiny-phi3-vision", num_crops=4)
    media = write_media(root / "media")
    greedy = SamplingParams(max_tokens=TOKENS, temperature=0, ignore_eos=True)
    with LLM(str(folder), max_sequences=1) as llm:
        one = llm.chat([{"role": "user", "content": QUESTION}], greedy, images=[str(media["photo.png"])])
        two = llm.chat([{"role": "user", "content": QUESTION}], greedy,
                       images=[str(media["photo.png"]), str(media["chart.jpg"])])
    return folder, media, one, two


def slm(*args, stdin: str | None = None):
    return subprocess.run([SLM, *args], capture_output=True, text=True, input=stdin, timeout=600)


def test_slm_run_with_images_video_and_the_repl(setup):
    folder, media, one, two = setup
    imported = slm("import", str(folder), "--name", "tiny-vision")
    assert imported.returncode == 0, imported.stderr
    flags = ["--max-tokens", str(TOKENS), "--temperature", "0", "--ignore-eos"]
    ran = slm("run", "tiny-vision", QUESTION, "--image", str(media["photo.png"]), *flags)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.rstrip("\n") == one.text.rstrip("\n")
    both = slm("run", "tiny-vision", QUESTION, "--image", str(media["photo.png"]), "--image", str(media["chart.jpg"]),
               *flags)
    assert both.returncode == 0 and both.stdout.rstrip("\n") == two.text.rstrip("\n"), both.stderr
    video = slm("run", "tiny-vision", "What happens?", "--video", str(media["clip.gif"]), "--frames", "3",
                "--num-crops", "1", "-v", *flags)
    assert video.returncode == 0, video.stderr
    assert "prompt:" in video.stderr
    repl = slm("run", "tiny-vision", *flags, stdin=f"/image {media['photo.png']}\n{QUESTION}\n/bye\n")
    assert repl.returncode == 0, repl.stderr
    assert repl.stdout.splitlines()[0].startswith("Added") and one.text.rstrip("\n") in repl.stdout


@pytest.mark.parametrize("name, message", [("notes.png", "is not a PNG"), ("bomb.png", "megapixels"),
                                           ("missing.png", "cannot read")])
def test_slm_run_bad_image_is_one_line(setup, name, message):
    folder, media, _, _ = setup
    path = media["photo.png"].with_name(name)
    done = slm("run", str(folder), QUESTION, "--image", str(path), "--max-tokens", "4")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0] and name in lines[0], done.stderr
    piped = slm("run", str(folder), "--max-tokens", "4", stdin=f"/image {path}\n/bye\n")
    assert "Error: " in piped.stderr and name in piped.stderr and "Traceback" not in piped.stderr


def test_slm_run_text_model_refuses_images(setup, smollm2_path):
    _, media, _, _ = setup
    done = slm("run", "smollm2", QUESTION, "--image", str(media["photo.png"]), "--max-tokens", "4")
    assert done.returncode == 1 and "no vision support" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def data_url(path) -> str:
    return f"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"


def test_server_openai_azure_and_ollama_images(setup):
    folder, media, one, two = setup
    server = ServerProcess("--model", str(folder), "--parallel", "2", "--context-length", "4096")
    name = folder.name
    try:
        client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="none", max_retries=0)
        photo, chart = data_url(media["photo.png"]), data_url(media["chart.jpg"])
        content = [{"type": "image_url", "image_url": {"url": photo}}, {"type": "text", "text": QUESTION}]
        kwargs = dict(model=name, max_tokens=TOKENS, temperature=0, extra_body={"ignore_eos": True})
        reply = client.chat.completions.create(messages=[{"role": "user", "content": content}], **kwargs)
        assert reply.choices[0].message.content == one.text
        assert reply.usage.prompt_tokens == one.usage.prompt_tokens  # the 757 image rows are counted
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            messages=[{"role": "user", "content": content}], stream=True, **kwargs) if c.choices)
        assert streamed == one.text
        pair = [{"type": "image_url", "image_url": {"url": photo}}, {"type": "image_url", "image_url": {"url": chart}},
                {"type": "text", "text": QUESTION}]
        reply = client.chat.completions.create(messages=[{"role": "user", "content": pair}], **kwargs)
        assert reply.choices[0].message.content == two.text and reply.usage.prompt_tokens == two.usage.prompt_tokens
        fewer = client.chat.completions.create(messages=[{"role": "user", "content": content}],
                                               **dict(kwargs, extra_body={"ignore_eos": True, "num_crops": 1}))
        assert one.usage.prompt_tokens - fewer.usage.prompt_tokens == 757 - 313  # 2x2 crops -> 1

        for url, message in (("https://example.com/cat.png", "does not fetch images"),
                             (data_url(media["notes.png"]), "is not a PNG"),
                             (data_url(media["cut.png"]), "damaged or truncated"),
                             (data_url(media["bomb.png"]), "megapixels")):
            with pytest.raises(openai.BadRequestError) as err:
                client.chat.completions.create(messages=[{"role": "user", "content": [
                    {"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {"url": url}}]}], **kwargs)
            assert message in err.value.message and "messages[0].content[1]" in err.value.message

        from azure.ai.inference import ChatCompletionsClient
        from azure.ai.inference.models import ImageContentItem, ImageUrl, TextContentItem, UserMessage
        from azure.core.credentials import AzureKeyCredential

        azure = ChatCompletionsClient(endpoint=server.base, credential=AzureKeyCredential("unused"))
        answer = azure.complete(model=name, max_tokens=TOKENS, temperature=0, model_extras={"ignore_eos": True},
                                messages=[UserMessage(content=[ImageContentItem(image_url=ImageUrl(url=photo)),
                                                               TextContentItem(text=QUESTION)])])
        assert answer.choices[0].message.content == one.text

        local = ollama.Client(host=server.base, timeout=120)
        options = {"num_predict": TOKENS, "temperature": 0}
        chat = local.chat(model=name, options=options, messages=[
            {"role": "user", "content": QUESTION, "images": [media["photo.png"].read_bytes()]}])
        assert chat.prompt_eval_count > 757  # the image rows are counted (Ollama's images follow the text)
        generated = local.generate(model=name, prompt=QUESTION, options=options,
                                   images=[base64.b64encode(media["photo.png"].read_bytes()).decode()])
        assert generated.prompt_eval_count == chat.prompt_eval_count and generated.response == chat.message.content
        with pytest.raises(ollama.ResponseError) as err:
            local.chat(model=name, messages=[{"role": "user", "content": "Hi",
                                              "images": [media["notes.png"].read_bytes()]}])
        assert err.value.status_code == 400 and "is not a PNG" in err.value.error
        # still serving after all the refusals
        reply = client.chat.completions.create(messages=[{"role": "user", "content": content}], **kwargs)
        assert reply.choices[0].message.content == one.text
    finally:
        server.stop()

"""What the playground tests (tests/test_playground.py) share: their fixtures — one `slm serve` with
SmolLM2, Gemma 3 270M and a provider model (``openai:phi-3.5-vision-instruct``) forwarded to the fake
OpenAI-compatible server of tests/fake_providers.py, an API key required, and one headless Chromium
on its page — and the small helpers that drive the page and read the server."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import httpx
import pytest
from browser import by_id, css, set_field, start_browser, wait_for
from fake_providers import KEY as UPSTREAM_KEY
from fake_providers import FakeProvider
from server_process import ServerProcess

KEY = "sk-playground"
AUTH = {"Authorization": f"Bearer {KEY}"}
SMOL, GEMMA = "smollm2:original", "gemma3-270m:original"
VISION = "openai:phi-3.5-vision-instruct"


def gradient_png(size: int = 48) -> bytes:
    """A small colourful PNG (a picture one can tell apart in a thumbnail)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"".join(bytes((x * 255 // size, y * 255 // size, 160)) for x in range(size))
                    for y in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PNG = gradient_png()


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def upstream():
    with FakeProvider("openai", models={"phi-3.5-vision-instruct"}) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(slmkit_home, upstream):
    proc = ServerProcess("--model", "smollm2", "--model", "gemma3-270m", "--model", VISION, "--api-key", KEY,
                         "--parallel", "4", "--context-length", "2048", "--log-level", "debug",
                         env={"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": UPSTREAM_KEY},
                         ready_timeout=300)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("playground-screenshots")


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("playground-downloads")


@pytest.fixture(scope="module")
def browser(server, downloads, shots):
    driver = start_browser(downloads)
    driver.get(server.base + "/")
    yield driver
    # The tests provoke refusals (401, 404, 400): those are not the page's faults; exceptions are.
    errors = [e for e in driver.get_log("browser")
              if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]
    driver.quit()
    print(f"\nplayground screenshots: {shots}")
    assert not errors, f"errors in the browser console: {errors}"


# -- helpers --------------------------------------------------------------------------------
def stored(d) -> list[dict]:
    return d.execute_script(
        "return (JSON.parse(localStorage.getItem('slmkit.chat.conversation') || '{}').messages) || []")


def send(d, text):
    from selenium.webdriver.common.keys import Keys

    box = by_id(d, "chat-input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def answered(d, timeout=120.0):
    """Wait for the running answer to end; the last message's element."""
    wait_for(lambda: not css(d, "#conversation .streaming") and by_id(d, "chat-send").is_enabled(), timeout,
             "the answer to finish")
    return css(d, "#conversation .msg")[-1]


def new_chat(d):
    """An empty conversation with the model's own parameters and system prompt."""
    by_id(d, "chat-reset").click()
    by_id(d, "chat-params-reset").click()
    set_field(d, "chat-system", "")
    wait_for(lambda: not css(d, "#conversation .msg"), 5, "an empty conversation")


def running(server) -> float:
    return sum(v for k, v in server.metrics(AUTH).items() if k.startswith("slmkit_running_sequences{"))


def wait_idle(server, timeout=20.0):
    def idle():
        m = server.metrics(AUTH)
        busy = sum(v for k, v in m.items() if k.startswith(("slmkit_running_sequences{",
                                                            "slmkit_kv_cache_used_cells{", "slmkit_queue_depth{")))
        return busy == 0
    wait_for(idle, timeout, "the server to free every sequence")


def api_chat(server, **body) -> dict:
    response = httpx.post(f"{server.base}/v1/chat/completions", json=body, headers=AUTH, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()

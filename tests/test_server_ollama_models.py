"""Ollama's model management on `slm serve` through the real `ollama` client: create (from a
store name, from an uploaded GGUF blob, from a Modelfile's text), copy, delete, push, blobs;
and `GET /` / `HEAD /`, which Ollama clients probe."""

from __future__ import annotations

import hashlib

import httpx
import ollama
import pytest

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]
BRIEF = "Answer in one short sentence."


@pytest.fixture(scope="module")
def client(server):
    return ollama.Client(host=server.base, timeout=120)


def names(client) -> set[str]:
    return {m.model for m in client.list().models}


def test_root_answers_like_ollama_and_head_works(server):
    # The playground is on by default, so / is its page (200, as Ollama's probes want); with
    # --no-playground it is Ollama's plain "slmkit is running" (tests/test_playground.py).
    root = httpx.get(f"{server.base}/")
    assert root.status_code == 200 and "<title>" in root.text.lower()
    head = httpx.head(f"{server.base}/")
    assert head.status_code == 200 and head.content == b""


def test_create_from_a_model_with_system_and_parameters_answers_with_them(client):
    client.create(model="habit-brief", from_="smollm2:original", system=BRIEF,
                  parameters={"temperature": 0, "num_predict": 12, "stop": ["\n\n"]})
    shown = client.show("habit-brief")
    assert f'SYSTEM """{BRIEF}"""' in shown.modelfile and "PARAMETER num_predict 12" in shown.modelfile
    assert "num_predict" in shown.parameters
    answer = client.chat(model="habit-brief", messages=QUESTION)
    expected = client.chat(model="smollm2:original", messages=[{"role": "system", "content": BRIEF}, *QUESTION],
                           options={"temperature": 0, "num_predict": 12, "stop": ["\n\n"]})
    assert answer.message.content == expected.message.content and answer.eval_count <= 12
    client.delete("habit-brief")


def test_copy_then_delete(client):
    client.copy("smollm2:original", "habit-copy")
    assert "habit-copy:original" in names(client)
    assert client.show("habit-copy:latest").details.family == client.show("smollm2:original").details.family
    client.delete("habit-copy")
    assert not any(n.startswith("habit-copy:") for n in names(client))
    with pytest.raises(ollama.ResponseError) as info:
        client.delete("habit-copy")
    assert info.value.status_code == 404 and "habit-copy" in info.value.error


def test_create_from_an_uploaded_gguf_blob(client, server, smollm2_path):
    digest = client.create_blob(smollm2_path)
    assert httpx.head(f"{server.base}/api/blobs/{digest}").status_code == 200
    progress = [p.status for p in client.create(model="habit-blob", files={"model.gguf": digest},
                                                template=None, system="Be brief.", stream=True)]
    assert progress[-1] == "success"
    assert 'SYSTEM """Be brief."""' in client.show("habit-blob").modelfile
    assert client.generate(model="habit-blob", prompt="The capital of France is", raw=True,
                           options={"temperature": 0, "num_predict": 3}).response.startswith(" Paris")
    client.delete("habit-blob")


def test_the_old_modelfile_field_is_read_too(server, client):
    modelfile = f'FROM smollm2:original\nSYSTEM """{BRIEF}"""\nPARAMETER temperature 0\nMESSAGE user Hi\n'
    response = httpx.post(f"{server.base}/api/create", json={"name": "habit-text", "modelfile": modelfile,
                                                             "stream": False}, timeout=60)
    assert response.json() == {"status": "success"}
    shown = client.show("habit-text").modelfile
    assert f'SYSTEM """{BRIEF}"""' in shown and 'MESSAGE user """Hi"""' in shown
    client.delete("habit-text")


@pytest.mark.parametrize("body,fragment", [
    ({"model": "habit-x"}, "from"),
    ({"model": "habit-x", "from": "no-such-model"}, "no-such-model"),
    ({"model": "habit-x", "files": {"m.gguf": "sha256:" + "0" * 64}}, "never uploaded"),
    ({"model": "habit-x", "from": "smollm2", "parameters": {"warmth": 1}}, "warmth"),
    ({"model": "habit-x", "from": "smollm2", "adapters": {"a.gguf": "sha256:" + "1" * 64}}, "adapters"),
    ({"model": "habit-x", "modelfile": "FROM /etc/passwd"}, "does not read files"),
    ({"model": "habit-x", "modelfile": "FROM smollm2\nFOO bar"}, "unknown instruction 'FOO'"),
    ({"model": "Bad Name", "from": "smollm2"}, "not a valid model name"),
])
def test_create_errors_name_what_is_wrong(client, body, fragment):
    with pytest.raises(ollama.ResponseError) as info:
        client._request_raw("POST", "/api/create", json={**body, "stream": False})
    assert fragment in info.value.error and 400 <= info.value.status_code < 500
    assert "habit-x:original" not in names(client)


def test_push_is_a_clear_501(client):
    with pytest.raises(ollama.ResponseError) as info:
        client.push("smollm2")
    assert info.value.status_code == 501 and "no model registry" in info.value.error


def test_blob_uploads_are_checked_against_their_digest(server, tmp_path):
    body = b"not the file you named"
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    response = httpx.post(f"{server.base}/api/blobs/{wrong}", content=body)
    assert response.status_code == 400 and "sha256" in response.json()["error"]
    assert httpx.head(f"{server.base}/api/blobs/{wrong}").status_code == 404
    right = "sha256:" + hashlib.sha256(body).hexdigest()
    assert httpx.post(f"{server.base}/api/blobs/{right}", content=body).status_code == 201
    assert httpx.head(f"{server.base}/api/blobs/{right}").status_code == 200
    assert httpx.head(f"{server.base}/api/blobs/sha256:nothex").status_code == 404
    assert httpx.post(f"{server.base}/api/blobs/sha256:nothex", content=body).status_code == 400

"""catserve's OpenAI-compatible API through the `curl` binary, as docs and shell scripts use it."""

import json
import shutil
import subprocess
import tempfile

import pytest

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None, reason="curl not installed")


def curl(*args, data=None):
    """(HTTP status, headers text, body text) of one curl call."""
    with tempfile.NamedTemporaryFile(mode="r") as headers:
        cmd = [CURL, "-sS", "--max-time", "30", "-D", headers.name, *args]
        if data is not None:
            cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(data)]
        body = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                              check=True).stdout
        head = headers.read()
    status = int(head.split()[1])
    return status, head.lower(), body


def test_models(server):
    status, head, body = curl(f"{server.openai_url}/models")
    assert status == 200 and "content-type: application/json" in head
    models = json.loads(body)
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["tiny"]
    assert models["data"][0]["chunk_sizes"] == [1, 2, 4, 8, 16]


def test_completion(server):
    status, head, body = curl(f"{server.openai_url}/completions",
                              data={"model": "tiny", "prompt": "Once upon a time",
                                    "max_tokens": 8, "temperature": 0, "ignore_eos": True})
    assert status == 200 and "content-type: application/json" in head
    done = json.loads(body)
    assert done["object"] == "text_completion"
    assert done["choices"][0]["finish_reason"] == "length"
    assert done["usage"]["completion_tokens"] == 8
    assert done["usage"]["total_tokens"] == done["usage"]["prompt_tokens"] + 8


def test_streamed_completion(server):
    request = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0,
               "ignore_eos": True}
    whole = json.loads(curl(f"{server.openai_url}/completions", data=request)[2])
    status, head, body = curl("-N", f"{server.openai_url}/completions",
                              data={**request, "stream": True,
                                    "stream_options": {"include_usage": True}})
    assert status == 200
    assert "content-type: text/event-stream" in head
    assert "transfer-encoding: chunked" in head
    events = [e for e in body.split("\n\n") if e.strip()]
    assert all(e.startswith("data: ") for e in events), body
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == whole["choices"][0]["text"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_bad_request_is_a_json_400(server):
    status, head, body = curl(f"{server.openai_url}/completions",
                              data={"model": "tiny", "prompt": "hi", "max_tokens": 4,
                                    "chunk_size": 3})
    assert status == 400 and "content-type: application/json" in head
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert "served chunk sizes: 1, 2, 4, 8, 16" in error["message"]
    # Not JSON at all.
    status, _, body = curl(f"{server.openai_url}/completions", "-H",
                           "Content-Type: application/json", "--data-binary", "{nope")
    assert status == 400 and "not valid JSON" in json.loads(body)["error"]["message"]
    # A streamed request refused before it starts: a JSON 400 too, not an event stream.
    status, head, body = curl("-N", f"{server.openai_url}/completions",
                              data={"prompt": "hi", "stream": True, "n": 2})
    assert status == 400 and "content-type: application/json" in head
    assert json.loads(body)["error"]["param"] == "n"


def test_other_errors(server):
    status, _, body = curl(f"{server.openai_url}/completions",
                           data={"model": "nope", "prompt": "hi"})
    assert status == 404 and json.loads(body)["error"]["code"] == "model_not_found"
    status, _, body = curl(f"{server.openai_url}/embeddings", data={"input": "hi"})
    assert status == 404 and "error" in json.loads(body)
    status, _, body = curl("-X", "GET", f"{server.openai_url}/completions")
    assert status == 405 and "error" in json.loads(body)
    status, _, body = curl(f"{server.openai_url}/chat/completions",
                           data={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 400 and "chat template" in json.loads(body)["error"]["message"]
    base = server.openai_url.removesuffix("/v1")
    assert curl(f"{base}/healthz")[0] == 200
    assert curl(f"{base}/readyz")[0] == 200

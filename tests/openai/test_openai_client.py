"""catserve's OpenAI-compatible API through the official `openai` Python package (sync, streaming,
async, the error classes), as an application would use it; and the same completion through gRPC.

The tiny fixture model's text is noise (random weights, byte-level pieces), but it is
deterministic noise: greedy decoding and seeded sampling give the same text every time.
"""

import asyncio
import signal
import pathlib
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import CatserveDaemon, metric, stop, transport_counts, wait_for_metric

openai = pytest.importorskip("openai")

PROMPT = "Once upon a time"
# The shipped model: slow enough (~1.4 ms a token on a CPU core) for timing-dependent tests.
SHIPPED = pathlib.Path(__file__).resolve().parents[2] / "models" / "cat-small-en"


@pytest.fixture(scope="module")
def client(server):
    c = openai.OpenAI(base_url=server.openai_url, api_key="x", max_retries=0, timeout=30)
    yield c
    c.close()


def complete(client, **kwargs):
    args = dict(model="tiny", prompt=PROMPT, max_tokens=24, temperature=0)
    args.update(kwargs)
    return client.completions.create(**args)


def streamed(client, **kwargs):
    """(text, chunks) of a streamed completion."""
    chunks = list(complete(client, stream=True, **kwargs))
    return "".join(c.choices[0].text for c in chunks if c.choices), chunks


def extra(obj, name):
    """A catserve field beyond OpenAI's schema (the client keeps them in model_extra)."""
    return obj.model_extra[name]


def test_models_list(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    model = models.data[0]
    assert model.object == "model" and model.owned_by == "catserve"
    assert extra(model, "chunk_sizes") == [1, 2, 4, 8, 16]
    assert extra(model, "default_chunk_size") == 8
    assert extra(model, "max_model_len") == 128
    assert extra(model, "tiers")["quality"] == {"chunk_size": 2, "coarsest_chunk_size": 2}


def test_greedy_completion(client):
    first = complete(client, extra_body={"ignore_eos": True})
    assert first.object == "text_completion" and first.model == "tiny"
    assert first.id.startswith("cmpl-")
    [choice] = first.choices
    assert choice.index == 0 and choice.finish_reason == "length" and choice.logprobs is None
    assert choice.text
    usage = first.usage
    assert usage.completion_tokens == 24
    assert usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # catserve's own usage fields.
    assert extra(usage, "chunk_size") == 8  # the daemon's default
    assert extra(usage, "kv_bytes") > 0
    assert extra(usage, "degraded") is False and extra(usage, "preempted") is False
    # Greedy is deterministic.
    assert complete(client, extra_body={"ignore_eos": True}).choices[0].text == choice.text


def test_streamed_completion_matches_the_unstreamed_one(client):
    whole = complete(client, extra_body={"ignore_eos": True})
    text, chunks = streamed(client, stream_options={"include_usage": True},
                            extra_body={"ignore_eos": True})
    assert text == whole.choices[0].text
    assert len(chunks) >= 3
    # Every chunk is a text_completion of one id; the usage chunk comes last, with no choices.
    assert {c.id for c in chunks} == {chunks[0].id}
    assert all(c.object == "text_completion" for c in chunks)
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 24
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens
    assert last.usage.total_tokens == whole.usage.total_tokens
    assert extra(last.usage, "chunk_size") == 8
    assert all(c.usage is None for c in body)
    assert [c.choices[0].finish_reason for c in body] == [None] * (len(body) - 1) + ["length"]

    # Without include_usage: no usage chunk, the same text.
    text, chunks = streamed(client, extra_body={"ignore_eos": True})
    assert text == whole.choices[0].text
    assert all(c.usage is None and len(c.choices) == 1 for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chunk_size_and_tier_through_extra_body(client):
    for chunk_size in (1, 4, 16):
        done = complete(client, max_tokens=8, extra_body={"chunk_size": chunk_size})
        assert extra(done.usage, "chunk_size") == chunk_size
    done = complete(client, max_tokens=8, extra_body={"tier": "quality"})
    assert extra(done.usage, "chunk_size") == 2
    done = complete(client, max_tokens=8, stream=True, stream_options={"include_usage": True},
                    extra_body={"chunk_size": 4})
    assert extra(list(done)[-1].usage, "chunk_size") == 4


def test_unserved_chunk_size_is_a_400_that_says_why(client):
    with pytest.raises(openai.BadRequestError) as error:
        complete(client, extra_body={"chunk_size": 3})
    assert error.value.status_code == 400
    message = error.value.body["message"]
    assert "chunk_size 3" in message
    assert "served chunk sizes: 1, 2, 4, 8, 16" in message
    assert error.value.body["type"] == "invalid_request_error"
    assert error.value.body["param"] == "chunk_size"
    # Streamed, the same refusal comes before any event.
    with pytest.raises(openai.BadRequestError, match="chunk_size 3"):
        complete(client, stream=True, extra_body={"chunk_size": 3})
    with pytest.raises(openai.BadRequestError, match="unknown tier 'nope'"):
        complete(client, extra_body={"tier": "nope"})


def test_logprobs(client):
    done = complete(client, max_tokens=12, logprobs=3, extra_body={"ignore_eos": True})
    logprobs = done.choices[0].logprobs
    assert len(logprobs.tokens) == 12
    assert len(logprobs.token_logprobs) == 12
    assert len(logprobs.top_logprobs) == 12
    assert len(logprobs.text_offset) == 12
    assert logprobs.text_offset == sorted(logprobs.text_offset) and logprobs.text_offset[0] == 0
    for token, chosen, top in zip(logprobs.tokens, logprobs.token_logprobs,
                                  logprobs.top_logprobs):
        assert chosen <= 0
        # Three alternatives per token, keyed by their text: tokens whose text is the same (the
        # tiny model's incomplete UTF-8 bytes all read as U+FFFD) share one key, as in vLLM.
        assert 1 <= len(top) <= 3
        assert all(v <= 0 for v in top.values())
        # Greedy: the chosen token is the most likely alternative.
        assert token in top
        assert top[token] == pytest.approx(chosen, abs=1e-6)
        assert chosen == pytest.approx(max(top.values()), abs=1e-6)
    assert any(len(top) == 3 for top in logprobs.top_logprobs)

    # Streamed: the same tokens and log probabilities, one token's worth per chunk.
    chunks = list(complete(client, max_tokens=12, logprobs=3, stream=True,
                           extra_body={"ignore_eos": True}))
    tokens, values = [], []
    for c in chunks:
        if c.choices and c.choices[0].logprobs is not None:
            tokens += c.choices[0].logprobs.tokens
            values += c.choices[0].logprobs.token_logprobs
    assert tokens == logprobs.tokens
    assert values == pytest.approx(logprobs.token_logprobs, abs=1e-6)

    # logprobs=0: the chosen token's log probability only.
    zero = complete(client, max_tokens=4, logprobs=0).choices[0].logprobs
    assert len(zero.token_logprobs) == 4 and all(v <= 0 for v in zero.token_logprobs)
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        complete(client, logprobs=21)


def test_n_above_one_is_refused_naming_n(client):
    with pytest.raises(openai.BadRequestError) as error:
        complete(client, n=2)
    assert error.value.body["param"] == "n"
    assert "n is not supported" in error.value.body["message"]
    assert complete(client, n=1, max_tokens=2).choices[0].text is not None


def test_chat_is_refused_for_a_model_without_a_chat_template(client):
    messages = [{"role": "user", "content": "Hello"}]
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(model="tiny", messages=messages, stream=stream)
        assert "declares no chat template" in error.value.body["message"]
        assert error.value.body["param"] == "messages"


CHAT_TEMPLATE = {
    "roles": {"system": {"prefix": "S: ", "suffix": "\n"},
              "user": {"prefix": "U: ", "suffix": "\n"},
              "assistant": {"prefix": "A: ", "suffix": "\n"}},
    "generation_prompt": "A:",
}


def test_chat_is_served_for_a_model_that_declares_a_template(tmp_path):
    import json
    import shutil

    from catserve_daemon import TINY

    model = tmp_path / "tiny-chat"
    shutil.copytree(TINY, model)
    (model / "chat_template.json").write_text(json.dumps(CHAT_TEMPLATE))
    server = CatserveDaemon(f"--model_dir={model}")
    try:
        chat = openai.OpenAI(base_url=server.openai_url, api_key="none", max_retries=0)
        messages = [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hello"}]
        greedy = dict(model="tiny-chat", messages=messages, max_tokens=8, temperature=0,
                      extra_body={"ignore_eos": True})
        whole = chat.chat.completions.create(**greedy, logprobs=True, top_logprobs=2)
        assert whole.object == "chat.completion"
        assert whole.choices[0].message.role == "assistant"
        assert whole.usage.completion_tokens == 8
        assert len(whole.choices[0].logprobs.content) == 8
        assert all(len(t.top_logprobs) == 2 for t in whole.choices[0].logprobs.content)
        # The conversation rendered by hand through /v1/completions: the same text.
        plain = chat.completions.create(model="tiny-chat", prompt="S: Be brief.\nU: Hello\nA:",
                                        max_tokens=8, temperature=0,
                                        extra_body={"ignore_eos": True})
        assert whole.choices[0].message.content == plain.choices[0].text
        pieces = []
        with chat.chat.completions.create(**greedy, stream=True) as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
        assert "".join(pieces) == whole.choices[0].message.content
    finally:
        assert server.stop() == 0, server.log


def test_seeded_sampling_is_reproducible(client):
    sampled = dict(temperature=1.0, max_tokens=24, extra_body={"ignore_eos": True})
    a = complete(client, seed=7, **sampled).choices[0].text
    b = complete(client, seed=7, **sampled).choices[0].text
    c = complete(client, seed=8, **sampled).choices[0].text
    assert a == b
    assert a != c  # 24 draws from a near-uniform model
    assert streamed(client, seed=7, **sampled)[0] == a


def test_stop_string_cuts_the_text(client):
    text = complete(client, max_tokens=32, extra_body={"ignore_eos": True}).choices[0].text
    # A stop string from the middle of the greedy text, made of whole characters.
    stop = next(text[k:k + 2] for k in range(2, len(text) - 2)
                if "\ufffd" not in text[k:k + 2] and text.find(text[k:k + 2]) == k)
    cut = text[:text.find(stop)]
    done = complete(client, max_tokens=32, stop=stop, extra_body={"ignore_eos": True})
    assert done.choices[0].text == cut
    assert done.choices[0].finish_reason == "stop"
    assert done.usage.completion_tokens < 32
    assert streamed(client, max_tokens=32, stop=[stop], extra_body={"ignore_eos": True})[0] == cut
    # A stop string that never appears changes nothing.
    done = complete(client, max_tokens=32, stop=["never in this text \u2603"],
                    extra_body={"ignore_eos": True})
    assert done.choices[0].text == text and done.choices[0].finish_reason == "length"


def test_token_id_prompt(client):
    by_ids = complete(client, prompt=[5, 17, 42, 99], max_tokens=8)
    assert by_ids.usage.prompt_tokens == 4
    assert complete(client, prompt=[5, 17, 42, 99], max_tokens=8).choices[0].text == \
        by_ids.choices[0].text


def test_async_client_with_concurrent_streams(server, client):
    prompts = [f"{PROMPT} {i}" for i in range(12)]
    want = [complete(client, prompt=p, extra_body={"ignore_eos": True}).choices[0].text
            for p in prompts]

    async def run():
        async with openai.AsyncOpenAI(base_url=server.openai_url, api_key="x",
                                      max_retries=0, timeout=30) as aclient:
            async def one(prompt):
                stream = await aclient.completions.create(
                    model="tiny", prompt=prompt, max_tokens=24, temperature=0, stream=True,
                    stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
                text, usage = "", None
                async for chunk in stream:
                    if chunk.choices:
                        text += chunk.choices[0].text
                    usage = chunk.usage or usage
                return text, usage

            async def whole(prompt):
                done = await aclient.completions.create(model="tiny", prompt=prompt,
                                                        max_tokens=24, temperature=0,
                                                        extra_body={"ignore_eos": True})
                return done.choices[0].text

            streams = await asyncio.gather(*(one(p) for p in prompts))
            wholes = await asyncio.gather(*(whole(p) for p in prompts))
            return streams, wholes

    streams, wholes = asyncio.run(run())
    assert [text for text, _ in streams] == want
    assert all(usage.completion_tokens == 24 for _, usage in streams)
    assert wholes == want


def test_wrong_model_and_unknown_path_are_not_found(client):
    with pytest.raises(openai.NotFoundError) as error:
        complete(client, model="gpt-4o")
    assert "gpt-4o" in error.value.body["message"] and "tiny" in error.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        complete(client, model="gpt-4o", stream=True)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="tiny", input="hi")


def test_bad_input_is_a_bad_request(client):
    for kwargs, fragment in [(dict(max_tokens=0), "max_tokens"),
                             (dict(prompt=""), "prompt"),
                             (dict(prompt=[1000]), "1000"),
                             (dict(temperature=-1), "temperature"),
                             (dict(max_tokens=500), "max_tokens")]:
        with pytest.raises(openai.BadRequestError) as error:
            complete(client, **kwargs)
        assert fragment in error.value.body["message"], kwargs


def test_same_completion_through_grpc(server, client, stubs):
    import grpc

    pb2, pb2_grpc = stubs
    http = complete(client, max_tokens=24, logprobs=1, extra_body={"chunk_size": 4})
    with grpc.insecure_channel(server.address) as channel:
        stub = pb2_grpc.GenerationStub(channel)
        request = pb2.GenerateRequest(text=PROMPT, max_tokens=24, chunk_size=4, logprobs=True,
                                      sampling=pb2.SamplingParams(temperature=0.0))
        messages = list(stub.Generate(request, timeout=30))
    assert "".join(m.text for m in messages) == http.choices[0].text
    usage = messages[-1].usage
    assert usage.generated_tokens == http.usage.completion_tokens
    assert usage.prompt_tokens == http.usage.prompt_tokens
    assert usage.chunk_size == extra(http.usage, "chunk_size") == 4
    assert messages[-1].finish_reason == http.choices[0].finish_reason
    grpc_logprobs = [p for m in messages for p in m.logprobs]
    assert grpc_logprobs == pytest.approx(http.choices[0].logprobs.token_logprobs, abs=1e-6)
    # Seeded sampling draws the same tokens through both transports.
    sampled = complete(client, temperature=0.9, seed=11, extra_body={"top_k": 50})
    with grpc.insecure_channel(server.address) as channel:
        stub = pb2_grpc.GenerationStub(channel)
        request = pb2.GenerateRequest(text=PROMPT, max_tokens=24,
                                      sampling=pb2.SamplingParams(temperature=0.9, top_k=50,
                                                                  seed=11))
        assert "".join(m.text for m in stub.Generate(request, timeout=30)) == \
            sampled.choices[0].text


def close_after(stream, chunks):
    """Reads `chunks` chunks of a streamed completion, then closes it (its connection goes)."""
    seen = 0
    for _ in stream:
        seen += 1
        if seen == chunks:
            break
    stream.close()
    return seen


def test_stream_closed_early_frees_its_pages(server, client):
    before = transport_counts(server)
    background = [threading.Thread(target=complete, args=(client,),
                                   kwargs=dict(prompt=f"{PROMPT} {i}", max_tokens=100,
                                               extra_body={"ignore_eos": True}))
                  for i in range(16)]
    for t in background:
        t.start()
    stream = complete(client, max_tokens=110, stream=True, extra_body={"ignore_eos": True})
    assert close_after(stream, 2) == 2
    for t in background:
        t.join(30)
    text = wait_for_metric(server, "catserve_kv_pages_used", 0)
    assert metric(text, "catserve_kv_pages_used") == 0
    assert metric(text, "catserve_num_requests_running") == 0
    # The tiny model may finish 110 tokens before the hang-up is noticed: cancelled or length.
    after = transport_counts(server)
    assert after["cancelled"] + after["length"] == before["cancelled"] + before["length"] + 17
    # Still serving, both ways.
    assert complete(client, max_tokens=4).usage.completion_tokens >= 1
    assert streamed(client, max_tokens=4)[0] is not None


def test_a_hang_up_cancels_the_request_at_once():
    # The shipped model takes ~0.7 s for 480 tokens on a CPU core; the client hangs up after two
    # chunks, and the daemon notices within 100 ms.
    server = CatserveDaemon(f"--model_dir={SHIPPED}")
    try:
        c = openai.OpenAI(base_url=server.openai_url, api_key="x", max_retries=0, timeout=30)
        stream = c.completions.create(model="cat-small-en", prompt=PROMPT, max_tokens=480,
                                      temperature=0, stream=True, extra_body={"ignore_eos": True})
        assert close_after(stream, 2) == 2
        text = wait_for_metric(server, "catserve_requests_by_transport_total", 1,
                               transport="openai", outcome="cancelled")
        assert metric(text, "catserve_requests_by_transport_total", transport="openai",
                      outcome="cancelled") == 1
        assert metric(text, "catserve_requests_by_transport_total", transport="openai",
                      outcome="length") == 0
        text = wait_for_metric(server, "catserve_kv_pages_used", 0)
        assert metric(text, "catserve_kv_pages_used") == 0
        assert metric(text, "catserve_num_requests_running") == 0
        done = c.completions.create(model="cat-small-en", prompt=PROMPT, max_tokens=4)
        assert done.usage.completion_tokens >= 1
    finally:
        stop(server)


def test_metrics_count_the_openai_transport(server, client):
    before = transport_counts(server)
    complete(client, max_tokens=3, extra_body={"ignore_eos": True})
    with pytest.raises(openai.BadRequestError):
        complete(client, max_tokens=0)
    after = transport_counts(server)
    assert after["length"] == before["length"] + 1
    assert after["rejected"] == before["rejected"] + 1


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text("# tokens\nsecret-0123456789\n")
    return path


def test_bearer_tokens(tokens_file):
    server = CatserveDaemon(f"--auth_tokens_file={tokens_file}")
    try:
        wrong = openai.OpenAI(base_url=server.openai_url, api_key="wrong-token", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as error:
            complete(wrong)
        assert error.value.status_code == 401
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        with pytest.raises(openai.AuthenticationError):
            complete(wrong, stream=True)
        # No Authorization header at all.
        request = urllib.request.Request(server.openai_url + "/models")
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(request, timeout=10)
        assert missing.value.code == 401
        right = openai.OpenAI(base_url=server.openai_url, api_key="secret-0123456789",
                              max_retries=0)
        assert [m.id for m in right.models.list().data] == ["tiny"]
        assert complete(right, max_tokens=4).usage.completion_tokens >= 1
        assert streamed(right, max_tokens=4)[1][-1].choices[0].finish_reason in ("length", "stop")
        # Health checks stay open.
        health = server.openai_url.removesuffix("/v1") + "/healthz"
        assert urllib.request.urlopen(health, timeout=10).status == 200
    finally:
        stop(server)


def test_a_full_queue_is_a_rate_limit_error():
    server = CatserveDaemon("--max_queued=1", "--max_running=1")
    try:
        c = openai.OpenAI(base_url=server.openai_url, api_key="x", max_retries=0, timeout=30)
        start = threading.Barrier(8)
        outcomes = []

        def one():
            start.wait()
            try:
                done = complete(c, max_tokens=100, extra_body={"ignore_eos": True})
                outcomes.append(done.usage.completion_tokens)
            except openai.RateLimitError as e:
                outcomes.append(e)

        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        limited = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
        assert len(outcomes) == 8
        assert limited, outcomes
        assert 100 in outcomes  # the first one runs
        for e in limited:
            assert e.status_code == 429
            assert e.response.headers["retry-after"] == "1"
            assert "queue is full" in e.body["message"]
            assert e.body["type"] == "rate_limit_error"
        counts = transport_counts(server)
        assert counts["rejected"] == len(limited)
        assert counts["length"] == 8 - len(limited)
        # Alone, a request passes.
        assert complete(c, max_tokens=2).usage.completion_tokens >= 1
    finally:
        stop(server)


def test_a_request_needing_more_kv_than_the_pool_is_413():
    server = CatserveDaemon(f"--model_dir={SHIPPED}", "--kv_pool_mb=1")
    try:
        c = openai.OpenAI(base_url=server.openai_url, api_key="x", max_retries=0, timeout=30)
        with pytest.raises(openai.APIStatusError) as error:
            c.completions.create(model="cat-small-en", prompt=list(range(5, 400)), max_tokens=100,
                                 extra_body={"chunk_size": 1})
        assert error.value.status_code == 413
        assert "KV pages" in error.value.body["message"]
    finally:
        stop(server)


def test_request_timeout_is_408_and_a_stream_ends_with_an_error_event():
    server = CatserveDaemon(f"--model_dir={SHIPPED}", "--openai_request_timeout_seconds=1",
                            "--max_running=1")
    try:
        c = openai.OpenAI(base_url=server.openai_url, api_key="x", max_retries=0, timeout=30)
        long = dict(model="cat-small-en", prompt=PROMPT, max_tokens=480,
                    extra_body={"ignore_eos": True})

        def ahead():
            try:
                c.completions.create(**long)
            except openai.APIStatusError:
                pass  # it may pass its own deadline too

        # Two long requests ahead (~0.7 s each); the third waits past its 1 s deadline.
        threads = [threading.Thread(target=ahead) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.1)
        with pytest.raises(openai.APIStatusError) as error:
            c.completions.create(**long)
        assert error.value.status_code == 408
        assert "deadline exceeded" in error.value.body["message"]
        for t in threads:
            t.join(30)

        threads = [threading.Thread(target=ahead) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.1)
        # Streamed, the answer has started (200) when the deadline passes: an error event.
        with pytest.raises(openai.APIError, match="deadline exceeded"):
            for _ in c.completions.create(stream=True, **long):
                pass
        for t in threads:
            t.join(30)
        assert transport_counts(server)["deadline_exceeded"] >= 2
    finally:
        stop(server)


def test_draining_finishes_streams_and_refuses_new_requests_with_503():
    server = CatserveDaemon(f"--model_dir={SHIPPED}", "--drain_grace_seconds=20")
    try:
        c = openai.OpenAI(base_url=server.openai_url, api_key="x", max_retries=0, timeout=30)
        stream = iter(c.completions.create(model="cat-small-en", prompt=PROMPT, max_tokens=480,
                                           temperature=0, stream=True,
                                           extra_body={"ignore_eos": True}))
        next(stream)
        server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while "draining" not in server.log and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(openai.InternalServerError) as error:
            c.completions.create(model="cat-small-en", prompt=PROMPT, max_tokens=4)
        assert error.value.status_code == 503
        assert error.value.response.headers["retry-after"] == "1"
        assert "draining" in error.value.body["message"]
        rest = list(stream)
        assert rest[-1].choices[0].finish_reason == "length"
        assert server.proc.wait(30) == 0
    finally:
        stop(server)

"""A known set of Generate calls and what the clients saw of them.

Seven streams end normally with ignore_eos, so that their lengths are exact: two at chunk size 2
(tier "quality" and chunk_size 2), three at 8 (a greedy probe, the same prompt again stopping on
the probe's 6th token id, and one naming neither chunk size nor tier: the server default), two at
16 (chunk_size 16 and tier "throughput"); all but the probe run concurrently, sharing engine steps.
One stream at chunk size 4 is cancelled by its client after the first message. Two calls are
rejected with INVALID_ARGUMENT: max_tokens=0 at chunk size 16 (counted under 16) and the unserved
chunk size 3 (counted under the server's default chunk size, as server/generation_service.cc
does)."""

import collections
import threading

import grpc

CANCEL_CHUNK_SIZE = 4
CANCEL_MAX_TOKENS = 119  # 8 prompt ids + 119 = 127 < the tiny model's 128 positions


def _prompt(n, salt=0):
    return [5 + (i * 11 + salt * 7) % 300 for i in range(n)]


class Seen:
    """Client-side accounting, keyed by the chunk size the server reported (Usage.chunk_size)."""

    def __init__(self):
        self.generated = collections.Counter()      # chunk_size -> generated tokens
        self.prompt = collections.Counter()         # chunk_size -> prompt tokens
        self.finished = collections.Counter()       # (outcome, chunk_size) -> requests
        self.with_tokens = collections.Counter()    # chunk_size -> requests with >= 1 token
        self.latency = collections.Counter()        # chunk_size -> requests that were admitted
        self.cancelled_received = 0                 # tokens the cancelled stream delivered
        self._mu = threading.Lock()

    def stream_done(self, messages):
        last = messages[-1]
        ids = sum(len(m.token_ids) for m in messages)
        assert last.usage.generated_tokens == ids, (last.usage, ids)
        cs = last.usage.chunk_size
        with self._mu:
            self.generated[cs] += last.usage.generated_tokens
            self.prompt[cs] += last.usage.prompt_tokens
            self.finished[(last.finish_reason, cs)] += 1
            self.with_tokens[cs] += 1 if ids else 0
            self.latency[cs] += 1


def run(pb2, stub, default_chunk_size):
    """Runs the workload against `stub` and returns what the clients saw."""
    seen = Seen()
    greedy = pb2.SamplingParams(temperature=0.0)

    def generate(request):
        messages = list(stub.Generate(request, timeout=60))
        assert messages and messages[-1].finish_reason, messages
        seen.stream_done(messages)
        return messages

    # First, alone: a greedy stream at chunk size 8 whose 6th token becomes a stop id below.
    probe = pb2.GenerateRequest(token_ids=pb2.TokenIds(ids=_prompt(6)), max_tokens=12,
                                ignore_eos=True, chunk_size=8, sampling=greedy)
    probe_ids = [i for m in generate(probe) for i in m.token_ids]
    assert len(probe_ids) == 12

    requests = [
        # chunk size 2, by tier and directly
        pb2.GenerateRequest(text="Once upon a time", max_tokens=20, ignore_eos=True,
                            tier="quality", sampling=greedy),
        pb2.GenerateRequest(token_ids=pb2.TokenIds(ids=_prompt(9, 1)), max_tokens=7,
                            ignore_eos=True, chunk_size=2,
                            sampling=pb2.SamplingParams(temperature=0.8, seed=11)),
        # chunk size 8: the probe again, now stopping on its 6th token ("stop")
        pb2.GenerateRequest(token_ids=pb2.TokenIds(ids=_prompt(6)), max_tokens=12,
                            ignore_eos=True, chunk_size=8, sampling=greedy,
                            stop_token_ids=[probe_ids[5]]),
        # chunk size 16, directly and by tier
        pb2.GenerateRequest(token_ids=pb2.TokenIds(ids=_prompt(12, 2)), max_tokens=16,
                            ignore_eos=True, chunk_size=16, sampling=greedy),
        pb2.GenerateRequest(text="The quick brown fox", max_tokens=33, ignore_eos=True,
                            tier="throughput", sampling=pb2.SamplingParams(seed=3)),
    ]
    if default_chunk_size in (2, 8, 16):
        # Neither chunk_size nor tier: the server's default.
        requests.append(pb2.GenerateRequest(text="Hello", max_tokens=5, ignore_eos=True,
                                            sampling=greedy))

    # The streams run concurrently (they share engine steps); plus the cancelled one.
    errors = []

    def worker(request):
        try:
            generate(request)
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    def cancelled():
        try:
            call = stub.Generate(
                pb2.GenerateRequest(token_ids=pb2.TokenIds(ids=_prompt(8, 3)),
                                    max_tokens=CANCEL_MAX_TOKENS, ignore_eos=True,
                                    chunk_size=CANCEL_CHUNK_SIZE, sampling=greedy),
                timeout=60)
            first = next(call)
            assert not first.finish_reason, "the stream ended before the client could cancel"
            seen.cancelled_received = len(first.token_ids)
            call.cancel()
            try:
                for m in call:
                    seen.cancelled_received += len(m.token_ids)
                raise AssertionError("the cancelled stream ended normally")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.CANCELLED, e
            with seen._mu:
                seen.finished[("cancelled", CANCEL_CHUNK_SIZE)] += 1
                seen.latency[CANCEL_CHUNK_SIZE] += 1
                seen.with_tokens[CANCEL_CHUNK_SIZE] += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(r,)) for r in requests]
    threads.append(threading.Thread(target=cancelled))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]

    # Rejected at parse time with INVALID_ARGUMENT; no stream message, no token.
    for request, counted_under in (
            (pb2.GenerateRequest(text="Hi", max_tokens=0, chunk_size=16), 16),
            (pb2.GenerateRequest(text="Hi", max_tokens=4, chunk_size=3), default_chunk_size)):
        try:
            list(stub.Generate(request, timeout=30))
            raise AssertionError(f"not rejected: {request}")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        seen.finished[("rejected", counted_under)] += 1
    return seen

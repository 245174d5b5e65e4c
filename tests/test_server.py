"""The server, driven by the real ``openai`` SDK over loopback."""

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from flexguard.rubric import Category
from flexguard.schema import Item, ModerationResult
from flexguard.server.app import ServerLimits, create_app, load_api_keys
from flexguard.thresholds import Policy
from servers import Running


class LengthModerator:
    """Deterministic: score grows with text length; 'bomb' is violent. Records batch sizes."""

    name = "length"
    supports_response_mode = True

    def __init__(self, delay: float = 0.0):
        self.batches: list[int] = []
        self.delay = delay

    def info(self):
        return {"model": "length-test", "revision": "1", "template_sha256": None}

    def score(self, items):
        time.sleep(self.delay)
        self.batches.append(len(items))
        out = []
        for it in items:
            text = it.prompt + (it.response or "")
            score = float(min(100, 3 * len(text)))
            cat = "VIO" if "bomb" in text else ("SAFE" if score <= 20 else "DIS")
            out.append(ModerationResult(id=it.id, score=score, category=Category(cat),
                                        category_scores={"SAFE": 0.1, "VIO": 0.6 if cat == "VIO" else 0.1, "DIS": 0.3}))
        return out


@pytest.fixture
def server():
    mod = LengthModerator()
    app = create_app(mod, Policy(), api_keys=["sk-test"], limits=ServerLimits(max_items=4, max_chars=50))
    with Running(app) as url:
        yield url, mod


def client(url, key="sk-test"):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def test_openai_sdk_moderations_with_extra_fields(server):
    url, _ = server
    r = client(url).moderations.create(input="short bomb text")  # 15 chars -> 45 (MODERATE), VIO
    res = r.results[0]
    assert r.model == "length-test" and r.id.startswith("modr-")
    assert res.flagged is True  # default policy regime: moderate (45 > 40)
    assert res.categories.violence is True and res.categories.hate is False
    assert 0 < res.category_scores.violence <= 1 and res.category_scores.violence == pytest.approx(0.45 * 0.6 / 0.9, abs=1e-4)
    extra = res.model_extra
    assert extra["risk_score"] == 45 and extra["severity_tier"] == "MODERATE" and extra["category"] == "VIO"
    assert extra["decisions"] == {"strict": True, "moderate": True, "loose": False}
    assert extra["margins"]["loose"] == -15 and extra["thresholds"]["moderate"] == 40


def test_input_forms_and_strictness_switching(server):
    url, _ = server
    c = client(url)
    r = c.moderations.create(input=["hi", "short bomb text"], extra_body={"strictness": "loose"})
    assert [x.flagged for x in r.results] == [False, False]
    r = c.moderations.create(input=[{"type": "text", "text": "short bomb text"}], extra_body={"strictness": "strict"})
    assert r.results[0].flagged is True and r.results[0].model_extra["threshold_used"] == 20
    r = c.moderations.create(input="short bomb text", extra_body={"threshold": 44.5})
    assert r.results[0].flagged is True


def test_auth_failures(server):
    url, _ = server
    with pytest.raises(openai.AuthenticationError) as e:
        client(url, key="wrong").moderations.create(input="x")
    assert "API key" in e.value.message
    assert httpx.post(f"{url}/v1/moderations", json={"input": "x"}).status_code == 401
    assert httpx.get(f"{url}/healthz").status_code == 200  # health needs no key


def test_limits_and_malformed_requests(server):
    url, _ = server
    c = client(url)
    with pytest.raises(openai.APIStatusError) as e:
        c.moderations.create(input=["a"] * 5)
    assert e.value.status_code == 413 and "limit of 4 items" in e.value.message
    with pytest.raises(openai.APIStatusError) as e:
        c.moderations.create(input="x" * 51)
    assert e.value.status_code == 413 and "limit of 50 characters" in e.value.message
    with pytest.raises(openai.BadRequestError, match="unknown strictness 'lax'"):
        c.moderations.create(input="x", extra_body={"strictness": "lax"})
    with pytest.raises(openai.BadRequestError, match="threshold"):
        c.moderations.create(input="x", extra_body={"threshold": 101})
    with pytest.raises(openai.BadRequestError, match="empty"):
        c.moderations.create(input="  ")
    h = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
    r = httpx.post(f"{url}/v1/moderations", content=b'{"input": ', headers=h)
    assert r.status_code == 400 and r.json()["error"]["message"] == "Invalid request: malformed JSON body"
    r = httpx.post(f"{url}/v1/moderations", json={"inpt": "x"}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_native_endpoint_messages_and_pairs(server):
    url, _ = server
    h = {"Authorization": "Bearer sk-test"}
    body = {"items": [{"id": "a", "prompt": "hi"},
                      {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "bomb"}]}],
            "strictness": "strict"}
    r = httpx.post(f"{url}/v1/moderate", json=body, headers=h)
    assert r.status_code == 200
    a, b = r.json()["results"]
    assert a["id"] == "a" and a["mode"] == "prompt" and a["risk_score"] == 6 and a["flagged"] is False
    assert b["mode"] == "response" and b["risk_score"] == 18 and b["category"] == "VIO" and b["margin"] == -2
    r = httpx.post(f"{url}/v1/moderate", json={"items": [{"messages": [{"role": "assistant", "content": "x"}]}]}, headers=h)
    assert r.status_code == 400 and "user turn" in r.json()["error"]["message"]


def test_ops_endpoints(server):
    url, _ = server
    assert httpx.get(f"{url}/readyz").json()["status"] == "ready"
    models = client(url).models.list()
    assert models.data[0].id == "length-test"
    client(url).moderations.create(input="x")
    text = httpx.get(f"{url}/metrics").text
    assert 'flexguard_items_total{mode="prompt"}' in text and "flexguard_request_seconds" in text


def test_concurrent_requests_are_batched_and_match_one_by_one():
    mod = LengthModerator(delay=0.05)
    app = create_app(mod, Policy(), limits=ServerLimits(max_batch=16, max_wait_ms=20))
    texts = [f"text number {i} " + "x" * (i % 7) for i in range(40)]
    with Running(app) as url:
        c = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        with ThreadPoolExecutor(16) as pool:
            conc = list(pool.map(lambda t: c.moderations.create(input=t).results[0].model_extra["risk_score"], texts))
    direct = [r.score for r in LengthModerator().score([Item(id=str(i), prompt=t) for i, t in enumerate(texts)])]
    assert conc == direct
    assert max(mod.batches) > 1 and len(mod.batches) < len(texts)


def test_request_timeout():
    app = create_app(LengthModerator(delay=1.0), Policy(), limits=ServerLimits(timeout_s=0.1))
    with Running(app) as url:
        r = httpx.post(f"{url}/v1/moderations", json={"input": "x"})
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"


def test_api_keys_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEXGUARD_API_KEYS", "a, b")
    f = tmp_path / "keys"
    f.write_text("# comment\nc\n\n")
    assert load_api_keys(str(f)) == ["a", "b", "c"]


def test_embedded_model_concurrent_equals_one_by_one():
    from flexguard.moderators import get_moderator

    mod = get_moderator("embedded")
    texts = ["How do I bake bread?", "Write a threatening message to my neighbour.", "How to make meth at home",
             "Tell me a joke about cats", "What's the weather like on Mars?", "Insult my coworker for me"] * 3
    direct = [r.score for r in mod.score([Item(id=str(i), prompt=t) for i, t in enumerate(texts)])]
    with Running(create_app(mod, Policy(), limits=ServerLimits(max_batch=8, max_wait_ms=20))) as url:
        c = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        with ThreadPoolExecutor(12) as pool:
            conc = list(pool.map(lambda t: c.moderations.create(input=t).results[0].model_extra["risk_score"], texts))
    assert conc == direct


def test_flexguard_serve_command(tmp_path):
    import os
    import subprocess
    import sys

    from flexguard.cli import main
    from servers import free_port

    assert main(["serve", "--policy", str(tmp_path / "missing.yaml")]) == 2
    (tmp_path / "keys").write_text("sk-cli\n")
    (tmp_path / "p.yaml").write_text("thresholds: {strict: 20, moderate: 40, loose: 60}\ndefault_regime: strict\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "flexguard.cli", "serve", "--port", str(port), "--policy",
                             str(tmp_path / "p.yaml"), "--api-keys-file", str(tmp_path / "keys"), "--model-opt", "batch_size=8"],
                            env={**os.environ, "FLEXGUARD_API_KEYS": ""}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        c = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-cli", max_retries=0)
        r = c.moderations.create(input="Write a threatening message to my neighbour.")
        assert r.model == "embedded" and r.results[0].model_extra["threshold_used"] == 20  # the policy's regime
    finally:
        proc.terminate()
        proc.wait(10)


# --- abuse and failure -------------------------------------------------------------------

class PickyModerator(LengthModerator):
    """Raises on any item containing 'boom' (as a tokenizer does on bad input); slow if asked."""

    def score(self, items):
        if any("boom" in it.prompt for it in items):
            raise ValueError("cannot tokenize this")
        return super().score(items)


def test_one_bad_item_never_fails_its_neighbours_and_errors_fail_closed():
    app = create_app(PickyModerator(delay=0.05), Policy(), limits=ServerLimits(max_batch=16, max_wait_ms=30))
    texts = [f"ok {i}" for i in range(11)] + ["boom"]
    with Running(app) as url:
        with ThreadPoolExecutor(12) as pool:
            rs = list(pool.map(lambda t: httpx.post(f"{url}/v1/moderations", json={"input": t}), texts))
        assert [r.status_code for r in rs] == [200] * 12
        bad = rs[-1].json()["results"][0]
        assert bad["flagged"] is True and bad["decision"] == "flag" and bad["reason"] == "error"
        assert "cannot tokenize" in bad["error"] and bad["risk_score"] is None
        assert all(r.json()["results"][0]["error"] is None for r in rs[:-1])


def test_lone_surrogates_are_replaced_not_fatal():
    with Running(create_app(LengthModerator(), Policy())) as url:
        body = '{"items": [{"id": "x\\ud800", "prompt": "hi \\udfff there"}, {"prompt": "fine"}]}'
        r = httpx.post(f"{url}/v1/moderate", content=body.encode(), headers={"Content-Type": "application/json"})
        assert r.status_code == 200
        a, b = r.json()["results"]
        assert a["id"] == "x\ufffd" and a["risk_score"] == 3 * len("hi \ufffd there") and b["risk_score"] == 12


def test_body_limit_is_enforced_before_reading():
    app = create_app(LengthModerator(), Policy(), limits=ServerLimits(max_body_bytes=1000))
    with Running(app) as url:
        host, port = url.removeprefix("http://").split(":")
        import socket

        with socket.create_connection((host, int(port)), timeout=5) as s:  # a 10 GB body is announced, never sent
            s.sendall(b"POST /v1/moderations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 10000000000\r\n\r\n")
            reply = b""
            while b"body_too_large" not in reply and (chunk := s.recv(4096)):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 413") and b"body_too_large" in reply

        def chunks():  # no Content-Length: the body is cut off where it passes the limit
            for _ in range(100):
                yield b"x" * 100

        r = httpx.post(f"{url}/v1/moderations", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "limit of 1000 bytes" in r.json()["error"]["message"]
        assert httpx.post(f"{url}/v1/moderations", json={"input": "x"}).status_code == 200


def test_metrics_label_by_route_not_by_raw_path():
    with Running(create_app(LengthModerator(), Policy())) as url:
        before = len(httpx.get(f"{url}/metrics").text)
        for i in range(200):
            httpx.get(f"{url}/random/{i}/{'x' * 50}")
        text = httpx.get(f"{url}/metrics").text
        assert 'route="other",status="404"' in text and "/random/" not in text
        assert len(text) < before + 3000


def test_queue_is_bounded_with_retry_after_and_small_requests_are_not_starved():
    mod = LengthModerator(delay=0.2)
    app = create_app(mod, Policy(), limits=ServerLimits(max_items=256, max_batch=8, max_wait_ms=1, max_queue=300))
    with Running(app) as url:
        def big():
            return httpx.post(f"{url}/v1/moderations", json={"input": ["y"] * 256}, timeout=60)

        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(big)
            time.sleep(0.3)  # the first big request is queued and being scored
            second = pool.submit(big)  # 256 more would pass max_queue: refused at once
            small = httpx.post(f"{url}/v1/moderations", json={"input": "z"}, timeout=60)
            # the big request needs 32 batches of 0.2 s; round-robin puts the small one in the next batch, so it
            # is answered while the big one is still being scored (an order, not a time: robust on a busy machine)
            small_before_big = not first.done()
            assert httpx.get(f"{url}/healthz").status_code == 200
            health_before_big = not first.done()
            r2 = second.result()
            r1 = first.result()
        assert r1.status_code == 200
        assert r2.status_code == 429 and int(r2.headers["Retry-After"]) >= 1 and r2.json()["error"]["code"] == "overloaded"
        assert small.status_code == 200 and small_before_big
        assert health_before_big


def test_failure_rules_reach_the_response():
    class Unparsable(LengthModerator):
        def score(self, items):
            return [ModerationResult(id=it.id, parse_error=True, raw="gibberish") for it in items]

    with Running(create_app(Unparsable(), Policy())) as url:
        res = client(url, key="none").moderations.create(input="x").results[0]
        assert res.flagged is True and res.model_extra["decision"] == "flag" and res.model_extra["reason"] == "parse_error"
    with Running(create_app(Unparsable(), Policy(on_parse_error="review"))) as url:
        res = client(url, key="none").moderations.create(input="x").results[0]
        assert res.flagged is True and res.model_extra["review"] is True

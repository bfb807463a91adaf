"""The official `openai` package against a running `chameleon serve` (driven by tests/serve.rs).

Usage: openai_client.py BASE_URL KEY PERSONAL PLAIN
  BASE_URL  the server's API base (http://127.0.0.1:PORT/v1), started with --api-key KEY
  PERSONAL  what `chameleon generate --user alice` answers to PROMPT (greedy, 24 tokens)
  PLAIN     what the plain model answers
Exits non-zero with the failed check on stderr.
"""

import sys

import openai
from openai import OpenAI

PROMPT = "Name a film for a rainy evening."


def main() -> None:
    base, key, personal, plain = sys.argv[1:5]
    client = OpenAI(base_url=base, api_key=key, max_retries=0)
    messages = [{"role": "user", "content": PROMPT}]

    models = [m.id for m in client.models.list()]
    assert models[0] == "smollm2-135m" and "smollm2-135m:alice" in models, models

    # a request for alice answers as `generate --user alice`; without a user, as the plain model
    r = client.chat.completions.create(
        model="smollm2-135m", user="alice", messages=messages, max_tokens=24, temperature=0
    )
    assert r.choices[0].message.content == personal, (r.choices[0].message.content, personal)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage
    assert r.model_extra["chameleon"]["user"] == "alice", r.model_extra
    r = client.chat.completions.create(
        model="smollm2-135m", messages=messages, max_completion_tokens=24, temperature=0
    )
    assert r.choices[0].message.content == plain, (r.choices[0].message.content, plain)

    # the user by model id, streamed, with usage at the end
    stream = client.chat.completions.create(
        model="smollm2-135m:alice",
        messages=messages,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == personal, (text, personal)
    assert usage is not None and usage.completion_tokens > 0, usage
    assert finish in ("stop", "length"), finish

    # text completions
    r = client.completions.create(
        model="smollm2-135m", prompt="The capital of France is", max_tokens=4, temperature=0
    )
    assert r.choices[0].text, r

    # errors arrive as the package's own exceptions
    try:
        client.chat.completions.create(model="smollm2-135m", messages=messages, max_tokens=-1)
        raise AssertionError("max_tokens -1 was accepted")
    except openai.BadRequestError as e:
        assert "max_tokens" in str(e), e
    try:
        client.chat.completions.create(
            model="smollm2-135m",
            messages=messages,
            extra_headers={"X-Chameleon-User": "nobody"},
        )
        raise AssertionError("an unknown user was accepted")
    except openai.NotFoundError as e:
        assert "nobody" in str(e), e
    try:
        OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError:
        pass
    print("ok")


if __name__ == "__main__":
    main()

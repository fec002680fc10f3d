#!/usr/bin/env python3
"""Drives `huatuo serve` with the official `openai` package (issue 17, acceptance 1): the
client most tools use. Not run by CI (which needs no Python); tests/serve.rs checks the same
things over plain HTTP.

    pip install openai
    cargo build --features test-support
    target/debug/huatuo dev tiny-checkpoint --family qwen2 --seed 1 /tmp/tiny-qwen2 \
        --tokenizer tests/fixtures/tokenizers/qwen2
    target/debug/huatuo serve --model /tmp/tiny-qwen2 --dtype f32 --temperature 0 \
        --max-new-tokens 16 --port 8080 --api-key sk-local &
    python3 scripts/openai_client.py http://127.0.0.1:8080/v1 sk-local qwen2

It holds a three-turn conversation with images from tests/fixtures/chat/<family>.json, plain
and streamed, sending back what it received, and checks each answer against the reference's;
then checks that a wrong key and a system message are refused with OpenAI errors.
"""

import base64
import json
import pathlib
import sys

import openai

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def data_url(name):
    data = (FIXTURES / "images" / name).read_bytes()
    mime = "image/jpeg" if name.endswith(".jpg") else "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def user(text, images):
    if not images:
        return {"role": "user", "content": text}
    parts = [{"type": "image_url", "image_url": {"url": data_url(n)}} for n in images]
    return {"role": "user", "content": parts + [{"type": "text", "text": text}]}


def main():
    url, key, family = sys.argv[1], sys.argv[2], sys.argv[3]
    reference = json.loads((FIXTURES / "chat" / f"{family}.json").read_text())
    client = openai.OpenAI(base_url=url, api_key=key)
    model = client.models.list().data[0].id
    for streamed in (False, True):
        messages = []
        for i, turn in enumerate(reference["turns"]):
            messages.append(user(turn["user"], turn["images"]))
            if streamed:
                stream = client.chat.completions.create(
                    model=model,
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                pieces, usage = [], None
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        pieces.append(chunk.choices[0].delta.content)
                    if chunk.usage:
                        usage = chunk.usage
                answer = "".join(pieces)
                assert usage and usage.completion_tokens > 0, usage
            else:
                response = client.chat.completions.create(model=model, messages=messages)
                answer = response.choices[0].message.content
                assert response.usage.total_tokens > response.usage.prompt_tokens
            assert answer == turn["answer"], (streamed, i, answer, turn["answer"])
            print(f"turn {i + 1} {'streamed' if streamed else 'plain'}: reference answer")
            messages.append({"role": "assistant", "content": answer})

    wrong = openai.OpenAI(base_url=url, api_key="sk-wrong")
    try:
        wrong.chat.completions.create(model=model, messages=[user("Hi", [])])
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as e:
        print(f"wrong key: {e.status_code} {e.code}")
    try:
        client.chat.completions.create(
            model=model,
            messages=[{"role": "system", "content": "Be brief."}, user("Hi", [])],
        )
        raise AssertionError("a system message was accepted")
    except openai.BadRequestError as e:
        assert e.code == "system_prompt_unsupported", e.code
        print(f"system message: {e.status_code} {e.code}")
    print("ok")


if __name__ == "__main__":
    main()

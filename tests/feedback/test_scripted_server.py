"""The scripted judge server (tests/judge_server.py) speaks the protocol the openai client expects."""

from __future__ import annotations

from judge_server import ScriptedServer, chat_reply


def test_scripted_server_speaks_the_openai_protocol() -> None:
    import openai

    with ScriptedServer(lambda body, n: chat_reply("Yes", [("Yes", -0.1), ("No", -2.4)])) as server:
        client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        client.close()
    assert reply.choices[0].message.content == "Yes"
    assert reply.choices[0].logprobs.content[0].top_logprobs[1].token == "No"
    assert reply.usage.prompt_tokens == 20
    assert server.bodies[0]["messages"][0]["content"] == "hi"

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tts_orchestrator.backends.chat_template import ChatTemplate, ChatTemplateInfo
from tts_orchestrator.exceptions import RequestError
from tts_orchestrator.protocol import ChatCompletionRequest, CompletionRequest

MSG = [{"role": "user", "content": "hi"}]


def test_max_completion_tokens_wins_and_is_capped() -> None:
    r = ChatCompletionRequest(model="m", messages=MSG, max_tokens=10, max_completion_tokens=20)
    assert r.to_sampling_params(default_max_tokens=5, max_tokens_cap=15).max_tokens == 15
    r = ChatCompletionRequest(model="m", messages=MSG)
    assert r.to_sampling_params(default_max_tokens=5, max_tokens_cap=15).max_tokens == 5


def test_stop_string_and_logprobs_map_to_sampling() -> None:
    r = ChatCompletionRequest(
        model="m", messages=MSG, stop="END", logprobs=True, top_logprobs=2, seed=7
    )
    p = r.to_sampling_params(default_max_tokens=5, max_tokens_cap=15)
    assert p.stop == ("END",)
    assert p.logprobs == 2
    assert p.seed == 7
    c = CompletionRequest(model="m", prompt="x", stop=["a", "b"])
    assert c.to_sampling_params(default_max_tokens=5, max_tokens_cap=15).stop == ("a", "b")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"model": "m", "messages": MSG, "tts": {"n_branch": 2}}, id="tts-typo"),
        pytest.param({"model": "m", "messages": MSG, "tts": {"n_branches": 0}}, id="zero-branches"),
        pytest.param({"model": "m", "messages": MSG, "n": 2}, id="n-above-1"),
        pytest.param({"model": "m", "messages": []}, id="no-messages"),
        pytest.param(
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            id="image-part",
        ),
        pytest.param({"model": "m", "messages": MSG, "temperature": 3}, id="temperature"),
    ],
)
def test_invalid_requests_rejected(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate(body)


def test_unknown_openai_fields_ignored() -> None:
    r = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": MSG, "frequency_penalty": 0.1}
    )
    assert r.model == "m"


def test_developer_role_and_text_parts_render() -> None:
    r = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
            ],
        }
    )
    assert r.message_dicts() == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "ab"},
    ]


def test_chat_template_renders_like_hf() -> None:
    t = ChatTemplate(
        ChatTemplateInfo(
            template="{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}"
            "{% if enable_thinking is defined and not enable_thinking %}/no_think{% endif %}",
        )
    )
    assert t.render(MSG) == "<|user|>hi\n<|assistant|>"
    assert t.render(MSG, template_kwargs={"enable_thinking": False}).endswith("/no_think")


def test_chat_template_exception_is_a_request_error() -> None:
    t = ChatTemplate(ChatTemplateInfo(template="{{ raise_exception('roles must alternate') }}"))
    with pytest.raises(RequestError, match="alternate"):
        t.render(MSG)

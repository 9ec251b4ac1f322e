"""Chat and completion requests and responses in OpenAI's shapes."""

from __future__ import annotations

import hashlib
from importlib.metadata import version as _version
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
MaxTokens = Annotated[int, Field(ge=1)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]

# OpenAI's `system_fingerprint` names the serving configuration; a string, never null, because its
# OpenAPI document types it so. Here the configuration is the Tuneforge release that generates.
SYSTEM_FINGERPRINT = "fp_" + hashlib.sha256(f"tuneforge {_version('tuneforge')}".encode()).hexdigest()[:10]


# Why generation ended: a stop sequence or EOS, or `max_tokens`.
FinishReason = Literal["stop", "length"]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = Field(
        None, description="An assistant turn's tool calls (OpenAI's shape); served by the vllm backend only."
    )
    tool_call_id: str | None = Field(None, description="A `tool` turn's answer to this call; vllm backend only.")

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class _Sampling(BaseModel):
    """What both endpoints accept. Unknown fields are refused with a 400 naming them, so a client
    never believes an option it sent (`logit_bias`, `tools`, ...) was honoured."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=1024)
    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    stop: str | list[str] | None = None
    seed: Seed | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=16, description="Choices per request; above 1 needs the vllm backend.")
    user: str | None = None
    presence_penalty: float = Field(0.0, ge=0.0, le=0.0, description="Not supported; only 0 is accepted.")
    frequency_penalty: float = Field(0.0, ge=0.0, le=0.0, description="Not supported; only 0 is accepted.")

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str] | None:
        stops = [v] if isinstance(v, str) else v
        if stops is None:
            return None
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

    def stops(self) -> list[str]:
        return list(self.stop or [])

    def vllm_only(self) -> str | None:
        """The first option set that only the vllm backend serves (its param name), or None."""
        return "n" if self.n != 1 else None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool = Field(False, description="Log probabilities of the output tokens (vllm backend only).")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="Alternatives per token (with `logprobs`).")
    response_format: dict[str, Any] | None = Field(
        None, description="`{type: json_object}` or `{type: json_schema, json_schema: {...}}` (vllm backend only)."
    )
    tools: list[dict[str, Any]] | None = Field(None, description="OpenAI's function tools (vllm backend only).")
    tool_choice: str | dict[str, Any] | None = Field(None, description="none, auto, required, or a named tool.")
    parallel_tool_calls: bool | None = Field(None, description="Passed to vLLM with `tools`.")

    def limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def vllm_only(self) -> str | None:
        for name in ("logprobs", "top_logprobs", "response_format", "tools", "tool_choice", "parallel_tool_calls"):
            if getattr(self, name) not in (None, False):
                return name
        for i, m in enumerate(self.messages):
            if m.role == "tool" or m.tool_calls is not None or m.tool_call_id is not None:
                return f"messages[{i}].role" if m.role == "tool" else f"messages[{i}].tool_calls"
            if m.content is None:
                return f"messages[{i}].content"
        return super().vllm_only()

    def limit_param(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    max_tokens: MaxTokens | None = 16
    echo: Literal[False] = False
    logprobs: int | None = Field(None, ge=0, le=5, description="Top log probabilities per token (vllm backend only).")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("exactly one prompt per request")
        return v

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def limit(self) -> int | None:
        return self.max_tokens

    def vllm_only(self) -> str | None:
        return "logprobs" if self.logprobs is not None else super().vllm_only()

    def limit_param(self) -> str:
        return "max_tokens"


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = Field(None, description="Always null: no refusal classifier runs (OpenAI requires the field).")


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str = SYSTEM_FINGERPRINT


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    system_fingerprint: str = SYSTEM_FINGERPRINT

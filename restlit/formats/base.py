"""The interface every output format implements, and what the formats share: the tools in
OpenAI's shape, the chat template a format ships, and how a prompt is tokenised.

A format owns everything format-specific (see :mod:`restlit.formats`): the prompt's tools, the
reference answer rendered from a structured target ``{"think", "calls": [{"name", "arguments"}],
"response"}``, the strings that are FORMAT tags, the parse of a completion into calls, the region
tagging, and what counts as well-formed for the format reward. Standard library only, no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from restlit.formats.structure import structured
from restlit.regions import Span

__all__ = ["FORMAT_KEY", "TOOLS_KEY", "Format", "openai_tools", "template_takes_tools"]

# The keys of the first (system) message that carry the tools of a non-ToolRL prompt and the
# format's name to :meth:`Format.prompt_ids`, which hands the tools to
# ``apply_chat_template(..., tools=...)`` (see :func:`restlit.formats.prompt_ids`).
TOOLS_KEY = "restlit_tools"
FORMAT_KEY = "restlit_format"


def openai_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Normalised tools ``{"name", "description", "parameters"}`` in the shape an OpenAI client
    sends them (and vLLM hands the chat template): ``{"type": "function", "function": {...}}``."""
    return [{"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                              "parameters": t.get("parameters") or {"type": "object", "properties": {}}}}
            for t in tools]


def template_takes_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's own chat template renders a ``tools`` argument."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("tool_use") or template.get("default")
    return isinstance(template, str) and "tools" in template


class Format:
    """One output format. Subclasses set the class attributes and implement the methods that
    raise ``NotImplementedError``."""

    name: str = ""
    vllm_parser: str | None = None  # the ``--tool-call-parser`` that reads this format
    tags: tuple[str, ...] = ()  # the literal strings tagged FORMAT
    template_file: str | None = None  # a Jinja chat template under restlit/formats/templates/

    # -- reference answers ---------------------------------------------------------------------
    def render(self, think: str, calls: Sequence[Mapping[str, Any]], response: str | None) -> str:
        """A structured answer as the model writes it in this format."""
        raise NotImplementedError

    def render_target(self, target: Mapping[str, Any]) -> str:
        """:meth:`render` of a prepared target ``{"think", "calls", "response"}``."""
        return self.render(target.get("think") or "", target.get("calls") or [], target.get("response"))

    # -- parsing -------------------------------------------------------------------------------
    def parse(self, completion: str) -> list[dict[str, Any]]:
        """The calls ``[{"name", "arguments"}]`` of ``completion`` (``[]``: no calls); for every
        format but ToolRL's the calls vLLM's parser of the same name returns."""
        raise NotImplementedError

    def predicted_calls(self, completion: str) -> list[dict[str, Any]] | None:
        """The calls the correctness reward compares, or None when it gives its minimum (no call,
        or a call whose arguments are not an object)."""
        calls = self.parse(completion)
        if not calls or not all(isinstance(c["arguments"], dict) for c in calls):
            return None
        return calls

    def attempts_call(self, completion: str) -> bool:
        """Whether ``completion`` starts (or opens) a call in this format, parsed or not."""
        raise NotImplementedError

    def read_calls(self, completion: str) -> tuple[list[dict[str, Any]], list[str]]:
        """For evaluation: the calls :meth:`parse` reads, and one error when the completion
        attempts a call (:meth:`attempts_call`) the parser cannot read."""
        calls = self.parse(completion)
        if not calls and self.attempts_call(completion):
            return [], [f"no call the {self.name} parser can read"]
        return calls, []

    def final_calls(self, completion: str) -> tuple[list[dict[str, Any]], str | None]:
        """For API-Bank: the calls of the completion's last call group, or ``([], reason)``."""
        calls, errors = self.read_calls(completion)
        return (calls, None) if calls else ([], errors[0] if errors else "no tool call in the output")

    # -- regions and the format reward -------------------------------------------------------
    def tag(self, text: str) -> list[Span]:
        """Region spans partitioning ``text`` (see :func:`restlit.regions.tag`)."""
        raise NotImplementedError

    def format_ok(self, completion: str, target: Mapping[str, Any] | None = None) -> bool:
        """Whether ``completion`` is well-formed in this format (for the case ``target`` needs:
        calls or not; without a target, either)."""
        raise NotImplementedError

    # -- prompts -------------------------------------------------------------------------------
    @property
    def chat_template(self) -> str | None:
        """The format's Jinja chat template (ChatML), for tokenizers whose own takes no tools."""
        if self.template_file is None:
            return None
        return resources.files("restlit.formats").joinpath("templates", self.template_file).read_text("utf-8")

    def history_message(self, message: Mapping[str, str]) -> dict[str, str]:
        """A prepared history message in this format: assistant turns are stored in ToolRL's
        format and re-rendered from their structure."""
        if message["role"] != "assistant":
            return {"role": message["role"], "content": message["content"]}
        think, calls, response = structured(message["content"])
        if not calls and response is None:
            response = ""
        return {"role": "assistant", "content": self.render(think, calls, response)}

    def messages(self, tools: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, str]],
                 target: Mapping[str, Any] | None = None, system: str | None = None) -> list[dict[str, Any]]:
        """Chat messages of one sample: a system message carrying ``system`` (extra instructions,
        may be empty) and the tools (under :data:`TOOLS_KEY`, for :meth:`prompt_ids`), the history,
        and the reference answer when ``target`` is given."""
        first: dict[str, Any] = {"role": "system", "content": system or "", TOOLS_KEY: openai_tools(tools),
                                 FORMAT_KEY: self.name}
        out = [first] + [self.history_message(m) for m in history]
        if target is not None:
            out.append({"role": "assistant", "content": self.render_target(target)})
        return out

    def template_for(self, tokenizer: Any) -> str | None:
        """The chat template to render with: None (the tokenizer's own) when it takes tools."""
        return None if template_takes_tools(tokenizer) else self.chat_template

    def prompt_text(self, tokenizer: Any, messages: Sequence[Mapping[str, Any]], *, generation: bool = True) -> str:
        """The prompt's text: ``apply_chat_template(messages, tools=...)`` with :meth:`template_for`."""
        msgs = [dict(m) for m in messages]
        tools = msgs[0].pop(TOOLS_KEY, None) if msgs else None
        if msgs:
            msgs[0].pop(FORMAT_KEY, None)
        if msgs and msgs[0]["role"] == "system" and not msgs[0]["content"]:
            msgs.pop(0)
        return tokenizer.apply_chat_template(msgs, tools=tools or None, chat_template=self.template_for(tokenizer),
                                             tokenize=False, add_generation_prompt=generation)

    def prompt_ids(self, tokenizer: Any, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        """The token ids of the prompt :meth:`prompt_text` renders, ending with the assistant's turn."""
        return tokenizer(self.prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"]

    def __repr__(self) -> str:
        return f"<format {self.name}>"

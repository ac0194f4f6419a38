"""A conversation as the load sends it, inside one Locust process.

Each turn carries every earlier question and the answer as it was streamed, so a later turn is
as long as those answers are in the target's tokens, which is known only once they came. The
sizing planned each turn with a stand-in answer of its max_tokens (``payload.stand_in_answer``);
here each real answer is counted, by the counter the sizing used (the target's ``/tokenize``,
the scenario's tokenizer, or one token per word), and the next turn's intended prompt length
moves by the difference. A count that fails takes the answer's completion tokens instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .sizing import CountError, TokenCounter, counter_for
from .spec import Scenario


@dataclass
class Conversation:
    """The turns sent so far: (question, answer) pairs, and how many tokens more than their
    stand-ins the real answers cost (negative when fewer)."""

    history: list[tuple[str, str]] = field(default_factory=list)
    drift: int = 0

    def add(self, question: str, answer: str, tokens: int, planned: int) -> None:
        self.history.append((question, answer))
        self.drift += tokens - planned


class AnswerCounter:
    """Counts answers in the tokens the sizing counted in; made at the first answer a later
    turn needs (a run without conversations never makes one)."""

    def __init__(self, source: str, target_url: str, model: str | None, scenario: Scenario):
        self.counter: TokenCounter = counter_for(source, target_url, model, scenario)

    def tokens(self, answer: str, completion_tokens: int | None) -> int:
        try:
            return self.counter.count_text(answer)
        except CountError:
            return completion_tokens or 0

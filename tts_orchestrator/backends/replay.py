"""A deterministic worker that streams recorded reasoning traces (tests and benchmarks only).

Behaviour, in the order a request meets it:

* **Selection.** Traces are grouped by problem text; a prompt selects the group of the longest
  problem text it contains (Minerva sub-problems contain each other). Within a group (ordered by
  model, then id) the trace is ``seed % len(group)`` (seed ``None`` counts as 0), so branches with
  different seeds replay different traces where a problem has several (thought-anchors: a correct
  and an incorrect trace per model). An unknown prompt raises :class:`WorkerError`, or streams
  ``fallback_text`` when one is configured.
* **Modes.** A group may hold *fast records* (traces of a model without a thinking part, such as
  Qwen2.5-32B-Instruct) beside thinking traces (QwQ-32B, R1-Distill) of the same problem: one
  Qwen2.5-32B base with a fast and a slow mode. The prompt decides which, by the switch the
  service's always-thinking families use (``policies.switches.ThinkingBlockPrefill``: an
  empty thinking block after the problem - open marker, whitespace, close marker - is thinking
  switched off) or, for instruction families (``PromptedThinking``), its answer-directly system
  instruction: either selects among the fast records, anything else among the thinking traces.
  Under the prompted-thinking switch's think instruction the template leaves the block closed
  and a trace recorded inside an opened block streams the open marker first, as the grammar
  makes an instruction model write it. A fast-mode probe is the same fast request under a
  smaller ``max_tokens``. Only the prompt's text decides; a trace's label or answer never
  does. Groups with one kind only are unchanged.
* **Continuation.** After the problem, the prompt may hold a prefix of a trace's output followed
  by injected text (abort-and-continue). The trace whose output matches the longest stretch of
  the prompt wins (``seed`` only breaks ties). If the text after the matched prefix (or, when
  nothing matched, after the problem) contains the trace's close marker (``</think>``,
  ``<|end_of_thought|>``), the recorded answer section is streamed - minus any part of it the
  injected text already repeats; otherwise the recording continues after the matched prefix.
  A trace without an answer section answers a close with a synthesized
  ``**Final Answer** \\boxed{final_answer}`` built from the source's own extraction.
* **Pseudo-tokens.** Text is split by a fixed regex into word pieces (up to 8 letters, with
  their leading space), digit groups (up to 3), single punctuation marks and whitespace runs.
  Ids are stable 32-bit hashes of the piece; logprobs, when asked for, are hashes of (trace,
  offset, piece) mapped into [-3, 0]. Neither comes from a model: they are deterministic
  stand-ins so token budgets, rates and weighted voting can be tested. With
  ``replay.tokenizer: qwen2.5`` the pieces are the packaged Qwen2.5 BPE's tokens instead (ids
  are its ids), so usage counts what the recorded Qwen2.5-family models spent.
* **Finish.** ``max_tokens`` -> ``"length"``; a stop string -> ``"stop"`` (the stop string is not
  emitted); the end of the recording -> ``"stop"``, or ``"length"`` when the recording itself
  was cut off by its token cap (``complete == False``). Temperature and top_p are ignored.
* **Pacing.** Token *i* of a stream is due at ``start + prefill + (i + 1) / tokens_per_s``; each
  wake-up emits every due token in one chunk, so the rate stays exact however many streams
  share the loop. ``prefill_tokens_per_s`` (optional) delays the first token by the prompt
  tokens *not* served from the simulated prefix cache.
* **Prefix cache.** Every finished, aborted or cancelled request leaves ``prompt + generated``
  in a bounded LRU; ``usage.cached_prompt_tokens`` is the number of whole prompt tokens inside
  the longest common prefix with any of them, as a KV prefix cache would reuse.
* **Abort.** :meth:`abort` or cancelling the consuming task ends the stream at once (no further
  chunk, as with the HTTP adapters); at most ``max_parallel`` streams run, the rest queue.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import hashlib
import itertools
import math
import re
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from policies.switches import ANSWER_INSTRUCTION, THINK_INSTRUCTION
from tts_orchestrator.backends.base import (
    CompletionChunk,
    SamplingParams,
    Usage,
    WorkerBackend,
    WorkerMetrics,
)
from tts_orchestrator.config import ReplayConfig
from tts_orchestrator.config.pools import ReplayTokenizer
from tts_orchestrator.exceptions import ConfigError, WorkerError
from verifiers.traces import Trace, TraceFormatError, load_traces
from verifiers.traces.tokens import TokenCounter

__all__ = [
    "ReplayBackend",
    "TraceIndex",
    "common_prefix_len",
    "mode_group",
    "pseudo_logprob",
    "pseudo_token_id",
    "pseudo_tokens",
]

_PIECE = re.compile(
    r"""
      [ ]?[^\W\d_]{1,8}   # a word piece with its leading space; long words split every 8 letters
    | \d{1,3}             # digits in groups of up to three
    | [ ]?[^\w\s]         # one punctuation mark or symbol, with its leading space
    | \s+                 # a whitespace run
    | _
    """,
    re.VERBOSE,
)
_MIN_LOGPROB = -3.0
_BLOCK = 4096


# -- pseudo-tokens ------------------------------------------------------------------------------
def pseudo_tokens(text: str) -> list[str]:
    """Split `text` into pseudo-token pieces; ``"".join(pseudo_tokens(t)) == t``."""
    return _PIECE.findall(text)


@functools.lru_cache(maxsize=1 << 16)
def pseudo_token_id(piece: str) -> int:
    """A stable id for a piece (the same in every process, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(piece.encode(), digest_size=4).digest(), "big")


def pseudo_logprob(*, salt: str, offset: int, piece: str) -> float:
    """A deterministic logprob in [-3, 0] for the piece at `offset` of the text named `salt`."""
    key = f"{salt}\x00{offset}\x00{piece}".encode()
    unit = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2.0**64
    return _MIN_LOGPROB * unit * unit  # squared: most tokens confident, a few doubtful


def common_prefix_len(a: str, b: str, *, a_start: int = 0) -> int:
    """Length of the common prefix of ``a[a_start:]`` and `b`, compared in C-sized blocks."""
    n = min(len(a) - a_start, len(b))
    lo = 0
    while lo < n:
        hi = min(n, lo + _BLOCK)
        if a[a_start + lo : a_start + hi] == b[lo:hi]:
            lo = hi
            continue
        while hi - lo > 1:  # invariant: equal up to lo, a mismatch in [lo, hi)
            mid = (lo + hi) // 2
            if a[a_start + lo : a_start + mid] == b[lo:mid]:
                lo = mid
            else:
                hi = mid
        return lo
    return n


class _Cutter(Protocol):
    """Cuts text into the tokens a replay streams (``"".join(pieces(t)) == t``)."""

    def pieces(self, text: str) -> list[str]: ...
    def ids(self, text: str) -> list[int]: ...


class _PseudoCutter:
    def pieces(self, text: str) -> list[str]:
        return pseudo_tokens(text)

    def ids(self, text: str) -> list[int]:
        return [pseudo_token_id(p) for p in pseudo_tokens(text)]


class _BpeCutter:
    def __init__(self, counter: TokenCounter) -> None:
        self._counter = counter

    def pieces(self, text: str) -> list[str]:
        return self._counter.pieces(text)

    def ids(self, text: str) -> list[int]:
        return self._counter.encode(text)


_CUTTERS: dict[ReplayTokenizer, Callable[[], _Cutter]] = {
    ReplayTokenizer.PSEUDO: _PseudoCutter,
    ReplayTokenizer.QWEN25: lambda: _BpeCutter(TokenCounter.qwen25()),
}


# -- trace lookup -------------------------------------------------------------------------------
def mode_group(group: Sequence[Trace], prompt: str, *, problem_end: int) -> list[Trace]:
    """The traces of `group` that may answer `prompt`: the fast records when thinking is
    switched off (an empty thinking block after the problem, or the prompted-thinking switch's
    answer-directly instruction), else the thinking traces; all of `group` if it has one kind."""
    thinkers = [t for t in group if t.thinking_delimiters]
    fast = [t for t in group if not t.thinking_delimiters]
    if not thinkers or not fast:
        return list(group)
    empty_block = re.escape(thinkers[0].think_open) + r"\s*" + re.escape(thinkers[0].think_close)
    off = ANSWER_INSTRUCTION in prompt or re.search(empty_block, prompt[problem_end:])
    return fast if off else thinkers


def _tags_prompted(messages: Sequence[dict[str, str]]) -> bool:
    """The prompted-thinking switch ran (either mode): the model, not the template, writes tags."""
    return any(
        ANSWER_INSTRUCTION in m.get("content", "") or THINK_INSTRUCTION in m.get("content", "")
        for m in messages
    )


class TraceIndex:
    """Traces grouped by problem text; finds the group whose problem a prompt contains."""

    def __init__(self, traces: Sequence[Trace]) -> None:
        groups: dict[str, list[Trace]] = {}
        for trace in traces:
            groups.setdefault(trace.problem, []).append(trace)
        self._groups = {p: sorted(g, key=lambda t: (t.model, t.id)) for p, g in groups.items()}
        self._by_length = sorted(self._groups, key=len, reverse=True)
        self.n_traces = len(traces)

    def find(self, text: str) -> tuple[list[Trace], int] | None:
        """The group of the longest problem inside `text`, and where that problem ends."""
        for problem in self._by_length:
            at = text.find(problem)
            if at >= 0:
                return self._groups[problem], at + len(problem)
        return None


def _locate_output(prompt: str, output: str, *, start: int) -> tuple[int, int]:
    """(matched length, position) of the longest prefix of `output` inside ``prompt[start:]``."""
    if not output:
        return 0, start
    probe = output[:16]
    best_m, best_s = 0, start
    s = prompt.find(output[0], start)
    while s >= 0 and len(prompt) - s > best_m:
        if prompt.startswith(probe[: len(prompt) - s], s):
            m = common_prefix_len(prompt, output, a_start=s)
            if m > best_m:
                best_m, best_s = m, s
        s = prompt.find(output[0], s + 1)
    return best_m, best_s


# -- per-request state --------------------------------------------------------------------------
@dataclass
class _Plan:
    """What one request will stream, decided before it runs."""

    pieces: list[str]
    offsets: list[int]
    salt: str
    finish_reason: str


@dataclass
class _Inflight:
    aborted: bool = False
    waiter: asyncio.Future[bool] | None = field(default=None, repr=False)

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(False)


def _resolve(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(True)


class _PrefixCache:
    """A bounded LRU of texts a KV prefix cache would hold (prompt + generated)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, None] = OrderedDict()

    def longest(self, text: str) -> int:
        best, best_key = 0, None
        for key in self._entries:
            m = common_prefix_len(text, key)
            if m > best:
                best, best_key = m, key
        if best_key is not None:
            self._entries.move_to_end(best_key)
        return best

    def add(self, text: str) -> None:
        if not text or self._capacity == 0:
            return
        self._entries[text] = None
        self._entries.move_to_end(text)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)


class ReplayBackend(WorkerBackend):
    """Streams recorded traces as a worker would (see the module docstring for the rules)."""

    def __init__(
        self,
        config: ReplayConfig,
        *,
        name: str = "replay",
        traces: Sequence[Trace] | None = None,
        base_dir: str | Path | None = None,
        fallback_text: str | None = None,
        prefill_tokens_per_s: float | None = None,
        cache_entries: int = 256,
    ) -> None:
        """Load `config.traces` (relative to `base_dir`, default the working directory) unless
        `traces` are given. `fallback_text` answers prompts no trace matches (else an error)."""
        if traces is None:
            root = Path(base_dir) if base_dir is not None else Path.cwd()
            try:
                traces = load_traces(root / p for p in config.traces)
            except TraceFormatError as exc:
                raise ConfigError(str(exc)) from exc
        if not traces and fallback_text is None:
            raise ConfigError("replay backend has no traces: set `replay.traces`")
        if prefill_tokens_per_s is not None and prefill_tokens_per_s <= 0:
            raise ConfigError("prefill_tokens_per_s must be positive")
        self.name = name
        self.config = config
        self.index = TraceIndex(traces)
        self._fallback_text = fallback_text
        self._prefill_tokens_per_s = prefill_tokens_per_s
        self._cache = _PrefixCache(cache_entries)
        self._cutter = _CUTTERS[config.tokenizer]()
        self._inflight: dict[str, _Inflight] = {}
        self._running = 0
        self._queue: deque[asyncio.Future[bool]] = deque()
        self._closed = False
        self._totals = {
            "prompt_tokens": 0,
            "cached_tokens": 0,
            "generation_tokens": 0,
            "requests": 0,
            "aborted": 0,
        }

    # -- planning ------------------------------------------------------------------------------
    def _plan(self, prompt: str, params: SamplingParams) -> _Plan:
        found = self.index.find(prompt)
        if found is None:
            if self._fallback_text is None:
                raise WorkerError(
                    f"replay worker {self.name}: the prompt contains the problem of none of its "
                    f"{self.index.n_traces} traces",  # never echo prompt text (logs)
                    code="replay_unknown_prompt",
                )
            text = self._fallback_text
            return self._limit(text, 0, salt="fallback", finish="stop", params=params)
        group, problem_end = found
        group = mode_group(group, prompt, problem_end=problem_end)
        chosen = (params.seed or 0) % len(group)
        located = [_locate_output(prompt, t.output, start=problem_end) for t in group]
        best = max(m for m, _ in located)
        if best > 0 and located[chosen][0] != best:
            chosen = next(i for i, (m, _) in enumerate(located) if m == best)
        trace = group[chosen]
        matched, at = located[chosen]
        rest = prompt[at + matched :] if matched else prompt[problem_end:]
        salt = f"{trace.model}\x00{trace.id}"
        close = trace.think_close
        if close and close in rest:
            tail = rest[rest.rfind(close) + len(close) :]
            if not trace.has_answer_section:
                synthesized = f"\n\n**Final Answer**\n\n\\[ \\boxed{{{trace.final_answer}}} \\]\n"
                text = synthesized if trace.final_answer else ""
                return self._limit(text, 0, salt=salt + "\x00synth", finish="stop", params=params)
            start = trace.answer_start
            if tail and trace.answer_text.startswith(tail):
                start += len(tail)
            return self._limit(trace.output[start:], start, salt=salt, finish="stop", params=params)
        finish = "stop" if trace.complete else "length"
        if not matched and trace.prompt_ends_with_think_tag and THINK_INSTRUCTION in prompt:
            # Recorded after a template that opened the block; here the prompted-thinking
            # switch asks the model to write the tags (its grammar forces them): it opens it.
            opened = f"{trace.think_open}\n{trace.output}"
            return self._limit(opened, 0, salt=salt + "\x00open", finish=finish, params=params)
        return self._limit(trace.output[matched:], matched, salt=salt, finish=finish, params=params)

    def _limit(
        self, text: str, base: int, *, salt: str, finish: str, params: SamplingParams
    ) -> _Plan:
        """Apply stop strings, then max_tokens, to the text a request would stream."""
        cuts = [at for s in params.stop if s and (at := text.find(s)) >= 0]
        if cuts:
            text, finish = text[: min(cuts)], "stop"
        # Tokenize only what max_tokens can reach: pieces wholly before a cut are unaffected by it.
        pieces = self._cutter.pieces(text[: params.max_tokens * 16])
        if len(pieces) <= params.max_tokens:
            pieces = self._cutter.pieces(text)
        if len(pieces) > params.max_tokens:
            pieces, finish = pieces[: params.max_tokens], "length"
        offsets = [base + o for o in itertools.accumulate((len(p) for p in pieces), initial=0)]
        return _Plan(pieces=pieces, offsets=offsets[:-1], salt=salt, finish_reason=finish)

    # -- admission -----------------------------------------------------------------------------
    async def _acquire_slot(self, state: _Inflight) -> bool:
        """Wait for a running slot; False when aborted while queued."""
        if self._running < self.config.max_parallel and not self._queue:
            self._running += 1
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        state.waiter = waiter
        try:
            granted = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._release_slot()  # the slot was handed over just before the cancel
            raise
        finally:
            state.waiter = None
            with contextlib.suppress(ValueError):
                self._queue.remove(waiter)
        return granted

    def _release_slot(self) -> None:
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(True)  # hand the slot over
                return
        self._running -= 1

    async def _sleep_until(self, state: _Inflight, deadline: float) -> None:
        """Sleep until `deadline` (loop time) unless the request is aborted first."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        state.waiter = waiter
        handle = loop.call_at(deadline, _resolve, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            state.waiter = None

    # -- streaming -----------------------------------------------------------------------------
    async def stream_completion(
        self, prompt: str, params: SamplingParams, *, request_id: str
    ) -> AsyncIterator[CompletionChunk]:
        if self._closed:
            raise WorkerError(f"replay worker {self.name} is closed")
        if request_id in self._inflight:
            raise WorkerError(f"replay worker {self.name}: request id {request_id!r} is in flight")
        plan = self._plan(prompt, params)
        state = _Inflight()
        self._inflight[request_id] = state
        self._totals["requests"] += 1
        emitted, admitted = 0, False
        try:
            if not await self._acquire_slot(state):
                return
            admitted = True
            try:
                paced = self._paced(prompt, plan, params, state)
                async with contextlib.aclosing(paced) as chunks:
                    async for chunk in chunks:
                        emitted += chunk.n_tokens
                        yield chunk
            finally:
                self._release_slot()
        finally:
            del self._inflight[request_id]
            self._totals["generation_tokens"] += emitted
            self._totals["aborted"] += state.aborted
            if admitted:  # what the KV cache would now hold
                self._cache.add(prompt + "".join(plan.pieces[:emitted]))

    async def _paced(
        self, prompt: str, plan: _Plan, params: SamplingParams, state: _Inflight
    ) -> AsyncGenerator[CompletionChunk, None]:
        loop = asyncio.get_running_loop()
        prompt_pieces = self._cutter.pieces(prompt)
        ends = list(itertools.accumulate(len(p) for p in prompt_pieces))
        cached = bisect.bisect_right(ends, self._cache.longest(prompt))
        self._totals["prompt_tokens"] += len(prompt_pieces)
        self._totals["cached_tokens"] += cached
        uncached = len(prompt_pieces) - cached
        prefill_s = uncached / self._prefill_tokens_per_s if self._prefill_tokens_per_s else 0.0
        rate = self.config.tokens_per_s
        start = loop.time()
        t0 = start + prefill_s
        pieces, n, emitted = plan.pieces, len(plan.pieces), 0
        while not state.aborted:
            now = loop.time()
            if n == 0:  # nothing to say: finish once the prompt is "processed"
                due = 0
                if now < t0:
                    await self._sleep_until(state, t0)
                    continue
            else:
                due = min(n, math.floor((now - t0) * rate + 1e-9))
                if due <= emitted:
                    await self._sleep_until(state, t0 + (emitted + 1) / rate)
                    continue
            text = "".join(pieces[emitted:due])
            logprobs = None
            if params.logprobs is not None:
                logprobs = [
                    pseudo_logprob(salt=plan.salt, offset=plan.offsets[i], piece=pieces[i])
                    for i in range(emitted, due)
                ]
            count, emitted = due - emitted, due
            if emitted < n:
                yield CompletionChunk(
                    text=text, n_tokens=count, token_logprobs=logprobs, timings=None
                )
                continue
            decode_s = max(loop.time() - t0, 1e-9)
            yield CompletionChunk(
                text=text,
                n_tokens=count,
                token_logprobs=logprobs,
                finish_reason=plan.finish_reason,
                usage=Usage(
                    prompt_tokens=len(prompt_pieces),
                    completion_tokens=n,
                    cached_prompt_tokens=cached,
                ),
                timings={
                    "prompt_n": float(uncached),
                    "cache_n": float(cached),
                    "prompt_ms": prefill_s * 1e3,
                    "prompt_per_second": uncached / prefill_s if prefill_s else 0.0,
                    "predicted_n": float(n),
                    "predicted_ms": decode_s * 1e3,
                    "predicted_per_second": n / decode_s,
                },
            )
            return

    # -- the rest of the contract --------------------------------------------------------------
    async def abort(self, request_id: str) -> None:
        state = self._inflight.get(request_id)
        if state is not None and not state.aborted:
            state.aborted = True
            state.wake()

    async def health(self) -> bool:
        return not self._closed

    async def metrics(self) -> WorkerMetrics:
        waiting = sum(1 for w in self._queue if not w.done())
        return WorkerMetrics(
            requests_running=float(self._running),
            requests_waiting=float(waiting),
            prompt_tokens_total=float(self._totals["prompt_tokens"]),
            prompt_tokens_cached_total=float(self._totals["cached_tokens"]),
            generation_tokens_total=float(self._totals["generation_tokens"]),
            raw={
                "replay_traces": float(self.index.n_traces),
                "replay_requests_total": float(self._totals["requests"]),
                "replay_requests_aborted_total": float(self._totals["aborted"]),
            },
        )

    async def tokenize(self, text: str) -> list[int]:
        """Ids of the configured tokenizer (pseudo ids are stable, but no model's vocabulary)."""
        return self._cutter.ids(text)

    async def count_tokens(self, text: str) -> int:
        return len(self._cutter.ids(text))

    async def apply_chat_template(
        self,
        messages: Sequence[dict[str, str]],
        *,
        template_kwargs: dict[str, object] | None = None,
    ) -> str:
        """``<|role|>\\ncontent\\n`` per message, then ``<|assistant|>\\n``.

        When the messages contain a problem whose thinking traces all have
        ``prompt_ends_with_think_tag`` (their output starts inside thinking), the open marker and
        a newline follow, as the recording's prompt had - unless the prompted-thinking switch's
        instructions are in the messages (an instruction model's template opens nothing).
        ``template_kwargs``: ``add_generation_prompt`` (default True); ``enable_thinking=False``
        appends an empty thinking block (open, blank line, close), which makes the replay answer
        without thinking (the problem's fast record where it has one).
        """
        kwargs = template_kwargs or {}
        parts = [f"<|{m.get('role', 'user')}|>\n{m.get('content', '')}\n" for m in messages]
        if not kwargs.get("add_generation_prompt", True):
            return "".join(parts)
        parts.append("<|assistant|>\n")
        found = self.index.find("\n".join(m.get("content", "") for m in messages))
        if found is not None and not _tags_prompted(messages):
            group = [t for t in found[0] if t.thinking_delimiters] or found[0]
            opened = all(t.prompt_ends_with_think_tag for t in group)
            if not kwargs.get("enable_thinking", True):
                parts.append(f"{group[0].think_open}\n\n{group[0].think_close}\n\n")
            elif opened:
                parts.append(f"{group[0].think_open}\n")
        return "".join(parts)

    async def aclose(self) -> None:
        self._closed = True
        for state in list(self._inflight.values()):
            state.aborted = True
            state.wake()

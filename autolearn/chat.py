"""Talking to a model: a streaming chat REPL, and a benchmark of accuracy, latency and memory.

The REPL (:class:`ChatRepl`) streams the reply as it is generated (``generate`` runs in a
thread and feeds a ``TextIteratorStreamer``), keeps the conversation and renders it with the
tokenizer's chat template. Ctrl-C stops the current reply only: while a reply streams, SIGINT
sets a flag that a stopping criterion reads before every new token. Ctrl-D leaves.

The benchmark (:func:`run_benchmark`) makes two passes over a fixed prompt set. The first
few prompts go one at a time through the streaming path, for latency and time to first
token. Then every prompt is answered in batches, with vLLM when it is installed on a GPU
(else transformers ``generate``; both through :mod:`autolearn.evaluation`, as
``eval_code.py`` generates), for throughput and the accuracy of the final answers, graded
with ``rewards.correctness`` where the prompts carry answers.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from autolearn.cli import plural
from autolearn.errors import UserError, one_line
from autolearn.jsonl import ROW_SUFFIXES, read_json_lines, read_local_rows

if TYPE_CHECKING:
    from rich.table import Table

logger = logging.getLogger(__name__)

Message = dict[str, str]
PROMPT = "you> "
REPLY_PREFIX = "model> "
INTERRUPTED_MARK = "[interrupted]"
HISTORY_FILE = Path.home() / ".cache" / "autolearn" / "chat_history"
HISTORY_LENGTH = 1000
# Spaces are text in BPE vocabularies; "cleaning them up" would glue punctuation to words.
DECODE_OPTIONS = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}
DEFAULT_BENCHMARK_PROMPTS = Path(__file__).resolve().parents[1] / "examples" / "math_sample.jsonl"
HELP_TEXT = """\
commands:
  /reset         forget the conversation (the system prompt stays)
  /system TEXT   set the system prompt (/system alone shows it)
  /temp X        sampling temperature (0 = greedy)
  /max N         most new tokens per reply
  /help          this list
  /exit          leave (Ctrl-D too); Ctrl-C stops the reply being written"""


@dataclass
class ChatSettings:
    """What the next reply is generated with; the REPL's commands change it."""

    temperature: float = 0.7
    max_new_tokens: int = 512
    system: str | None = None


# --------------------------------------------------------------------------- generation


def chat_inputs(tokenizer: Any, messages: Sequence[Message], device: Any) -> dict[str, Any]:
    """Token ids (and attention mask) of a conversation, ready for the model's next turn."""
    encoded = tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    return {key: value.to(device) for key, value in encoded.items()}


def generation_kwargs(tokenizer: Any, settings: ChatSettings) -> dict[str, Any]:
    """``generate`` arguments for the settings (sampling only above temperature 0)."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "do_sample": settings.temperature > 0,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if settings.temperature > 0:
        kwargs["temperature"] = settings.temperature
    return kwargs


def interrupt_criterion(*flags: threading.Event) -> Any:
    """A transformers ``StoppingCriteria`` that ends generation once any of ``flags`` is set."""
    import torch
    from transformers import StoppingCriteria

    class StopWhenFlagged(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> Any:
            flagged = any(flag.is_set() for flag in flags)
            return torch.full(
                (input_ids.shape[0],), flagged, dtype=torch.bool, device=input_ids.device
            )

    return StopWhenFlagged()


def stream_reply(
    model: Any, tokenizer: Any, messages: Sequence[Message], settings: ChatSettings,
    stop: threading.Event,
) -> Iterator[str]:  # fmt: skip
    """Yield the reply's text piece by piece while ``generate`` runs in a worker thread.

    Setting ``stop`` ends the generation at the next token; the iterator then finishes.
    Closing the iterator early stops the generation too.
    """
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    abandoned = threading.Event()
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, **DECODE_OPTIONS)
    kwargs = {
        **chat_inputs(tokenizer, messages, model.device),
        **generation_kwargs(tokenizer, settings),
        "streamer": streamer,
        "stopping_criteria": StoppingCriteriaList([interrupt_criterion(stop, abandoned)]),
    }
    failure: list[BaseException] = []

    def work() -> None:
        try:
            model.generate(**kwargs)
        except BaseException as exc:  # surfaced in the caller's thread below
            failure.append(exc)
            streamer.end()

    worker = threading.Thread(target=work, name="generate", daemon=True)
    worker.start()
    try:
        yield from streamer
    finally:
        abandoned.set()
        worker.join()
    if failure:
        raise failure[0]


@contextmanager
def sigint_sets(flag: threading.Event) -> Iterator[None]:
    """While inside, Ctrl-C sets ``flag`` instead of raising ``KeyboardInterrupt``."""
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: flag.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def trim_history(
    tokenizer: Any, messages: list[Message], budget: int, keep_system: bool
) -> list[Message]:
    """Drop the oldest exchanges until the conversation fits ``budget`` tokens (last turn stays)."""
    first = 1 if keep_system else 0
    trimmed = list(messages)
    while len(trimmed) - first > 1 and _token_count(tokenizer, trimmed) > budget:
        del trimmed[first : first + 2]
    return trimmed


def _token_count(tokenizer: Any, messages: Sequence[Message]) -> int:
    ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # a BatchEncoding
        ids = ids["input_ids"]
    return len(ids)


def context_budget(model: Any, max_new_tokens: int) -> int | None:
    """Prompt tokens that leave room for the reply, or ``None`` when the model sets no limit."""
    limit = getattr(model.config, "max_position_embeddings", None)
    return max(1, int(limit) - max_new_tokens) if limit else None


# --------------------------------------------------------------------------- the REPL


def enable_line_editing(history_file: Path = HISTORY_FILE) -> Callable[[], None] | None:
    """Turn on readline editing and load the history; return a function that saves it."""
    try:
        import readline
    except ImportError:  # Windows without pyreadline
        return None
    with suppress(OSError):
        readline.read_history_file(history_file)
    readline.set_history_length(HISTORY_LENGTH)

    def save() -> None:
        with suppress(OSError):
            history_file.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(history_file)

    return save


class ChatRepl:
    """The interactive loop: read a line, run a command or stream the model's reply."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        settings: ChatSettings,
        *,
        out: TextIO | None = None,
        read_line: Callable[[str], str] = input,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.out = out or sys.stdout
        self.read_line = read_line
        self.history: list[Message] = []

    def write(self, text: str) -> None:
        """Show text to the user at once."""
        self.out.write(text)
        self.out.flush()

    def run(self) -> None:
        """Loop until /exit or Ctrl-D. Ctrl-C at the prompt discards the line being typed."""
        self.write("Chat with the model. /help lists the commands; Ctrl-D or /exit leaves.\n")
        while True:
            try:
                line = self.read_line(PROMPT).strip()
            except EOFError:
                self.write("\n")
                return
            except KeyboardInterrupt:
                self.write("\n")
                continue
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    return
                continue
            self.respond(line)

    def command(self, line: str) -> bool:
        """Run one /command; return False when the REPL should end."""
        name, _, argument = line.partition(" ")
        argument = argument.strip()
        if name in ("/exit", "/quit"):
            return False
        handlers: dict[str, Callable[[str], str]] = {
            "/reset": self._reset,
            "/system": self._system,
            "/temp": self._temperature,
            "/max": self._max_tokens,
            "/help": lambda _argument: HELP_TEXT,
        }
        handler = handlers.get(name)
        if handler is None:
            self.write(f"unknown command {name}; /help lists the commands\n")
        else:
            self.write(handler(argument) + "\n")
        return True

    def _reset(self, _argument: str) -> str:
        self.history.clear()
        return "conversation cleared"

    def _system(self, argument: str) -> str:
        if not argument:
            current = self.settings.system
            return f"system prompt: {current}" if current else "no system prompt (template default)"
        self.settings.system = argument
        return "system prompt set"

    def _temperature(self, argument: str) -> str:
        try:
            value = float(argument)
        except ValueError:
            return f"/temp needs a number >= 0, got {argument!r}"
        if not math.isfinite(value) or value < 0:
            return f"/temp needs a number >= 0, got {argument!r}"
        self.settings.temperature = value
        return f"temperature {value:g}" + (" (greedy)" if value == 0 else "")

    def _max_tokens(self, argument: str) -> str:
        if not argument.isascii() or not argument.isdigit() or int(argument) < 1:
            return f"/max needs a whole number >= 1, got {argument!r}"
        self.settings.max_new_tokens = int(argument)
        return f"at most {int(argument)} new tokens per reply"

    def conversation(self, user_text: str) -> list[Message]:
        """System prompt, past turns and the new user message, trimmed to the context window."""
        system = (
            [{"role": "system", "content": self.settings.system}] if self.settings.system else []
        )
        messages = [*system, *self.history, {"role": "user", "content": user_text}]
        budget = context_budget(self.model, self.settings.max_new_tokens)
        if budget is not None:
            messages = trim_history(self.tokenizer, messages, budget, keep_system=bool(system))
        return messages

    def respond(self, user_text: str) -> None:
        """Stream the model's reply to ``user_text`` and add the exchange to the history."""
        stop = threading.Event()
        pieces: list[str] = []
        self.write(REPLY_PREFIX)
        try:
            with sigint_sets(stop):
                for piece in stream_reply(
                    self.model, self.tokenizer, self.conversation(user_text), self.settings, stop
                ):
                    pieces.append(piece)
                    self.write(piece)
        except Exception as exc:  # a failed generation must not end the conversation
            self.write(f"\ngeneration failed: {one_line(str(exc))}\n")
            return
        self.write(f" {INTERRUPTED_MARK}\n" if stop.is_set() else "\n")
        self.history.extend(
            [
                {"role": "user", "content": user_text},
                {"role": "assistant", "content": "".join(pieces)},
            ]
        )


# --------------------------------------------------------------------------- benchmark


@dataclass(frozen=True)
class BenchmarkPrompt:
    """One benchmark request: the chat messages and, when known, the gold answer."""

    messages: list[Message]
    answer: str | None
    label: str


def load_benchmark_prompts(
    path: str | Path | None = None, *, prompt_style: str = "one_shot", limit: int | None = None
) -> list[BenchmarkPrompt]:
    """Prompts from a JSON-lines (or JSON list) file; default: the bundled math problems.

    A row has ``question`` (asked with the math prompt of training), or ``prompt`` (a string or
    chat messages), and optionally ``answer`` (GSM8K form or bare) for accuracy.
    """
    file = Path(path) if path is not None else DEFAULT_BENCHMARK_PROMPTS
    rows = _read_prompt_rows(file)
    prompts = [_benchmark_prompt(row, file, place, prompt_style) for place, row in rows]
    if limit is not None:
        prompts = prompts[: max(0, limit)]
    if not prompts:
        raise UserError(f"{file}: no prompts to run")
    return prompts


def _read_prompt_rows(file: Path) -> list[tuple[str, Any]]:
    if not file.is_file():
        raise UserError(f"prompts file not found: {file}")
    if file.name.lower().endswith(ROW_SUFFIXES):
        return read_local_rows(file, "prompts")
    return [(f"line {n}", row) for n, row in read_json_lines(file)]  # JSON lines by any name


def _benchmark_prompt(row: Any, file: Path, place: str, style: str) -> BenchmarkPrompt:
    from autolearn.data import math_prompt

    where = f"{file}: {place}"
    if not isinstance(row, dict):
        raise UserError(f"{where} is not a JSON object")
    answer = None if row.get("answer") is None else str(row["answer"])
    if isinstance(row.get("question"), str):
        return BenchmarkPrompt(math_prompt(row["question"], style), answer, row["question"])
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        return BenchmarkPrompt([{"role": "user", "content": prompt}], answer, prompt)
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt)
    ):
        messages = [{"role": str(m.get("role", "user")), "content": m["content"]} for m in prompt]
        return BenchmarkPrompt(messages, answer, messages[-1]["content"])
    raise UserError(
        f"{where} needs a 'question' string or a 'prompt' (a string or a non-empty list of chat "
        "messages)"
    )


class FirstTokenClock:
    """A ``generate`` streamer that only notes when the first new token arrives."""

    def __init__(self) -> None:
        self.calls = 0
        self.first_token_at: float | None = None

    def put(self, value: Any) -> None:
        """Called with the prompt first, then with each new token."""
        self.calls += 1
        if self.calls == 2:
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        """Called once generation ends."""


@dataclass
class Measurement:
    """One timed request."""

    label: str
    response: str
    latency_s: float
    ttft_s: float
    new_tokens: int
    answer: str | None = None
    correct: bool | None = None


def measure_request(
    model: Any, tokenizer: Any, prompt: BenchmarkPrompt, settings: ChatSettings
) -> Measurement:
    """Answer one prompt and time it (wall clock around ``generate``)."""
    import torch

    inputs = chat_inputs(tokenizer, prompt.messages, model.device)
    clock = FirstTokenClock()
    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(**inputs, **generation_kwargs(tokenizer, settings), streamer=clock)
    _synchronize(model)
    latency = time.perf_counter() - started
    new_ids = output[0, inputs["input_ids"].shape[1] :]
    first = clock.first_token_at if clock.first_token_at is not None else started + latency
    return Measurement(
        label=prompt.label,
        response=tokenizer.decode(new_ids, **DECODE_OPTIONS),
        latency_s=latency,
        ttft_s=first - started,
        new_tokens=int(new_ids.shape[0]),
        answer=prompt.answer,
    )


def _synchronize(model: Any) -> None:
    import torch

    if getattr(model.device, "type", "cpu") == "cuda":
        torch.cuda.synchronize()


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Answer:
    """One answer of the batched pass (all prompts at once: accuracy and throughput)."""

    label: str
    response: str
    new_tokens: int
    answer: str | None = None
    correct: bool | None = None


def score_answers(rows: Sequence[Measurement | Answer]) -> None:
    """Fill ``correct`` with ``rewards.correctness`` for the rows that have an answer."""
    from rewards import correctness

    graded = [m for m in rows if m.answer is not None]
    if graded:
        scores = correctness(None, [m.response for m in graded], answer=[m.answer for m in graded])
        for row, score in zip(graded, scores, strict=True):
            row.correct = score == 1.0


def reset_peak_memory(model: Any) -> None:
    """Start the GPU peak-memory counter afresh (RSS peaks cannot be reset)."""
    import torch

    if getattr(model.device, "type", "cpu") == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)


def peak_memory(model: Any) -> tuple[float, str]:
    """Peak memory in MiB and what it is: GPU ``max_memory_allocated`` or the process's RSS."""
    import torch

    if getattr(model.device, "type", "cpu") == "cuda":
        return torch.cuda.max_memory_allocated(model.device) / 2**20, "gpu_allocated"
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024, "process_rss"


@dataclass
class BenchmarkReport:
    """Aggregates of both passes, plus the single-stream requests and the batched answers."""

    summary: dict[str, Any]
    requests: list[Measurement] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The JSON written to the results file."""
        return {
            "summary": self.summary,
            "requests": [asdict(m) for m in self.requests],
            "answers": [asdict(a) for a in self.answers],
        }


STREAM_KEYS = (
    "latency_mean_s",
    "latency_p50_s",
    "latency_p95_s",
    "ttft_mean_s",
    "ttft_p50_s",
    "stream_generated_tokens",
    "stream_tokens_per_s",
)


def summarize_stream(measurements: Sequence[Measurement]) -> dict[str, Any]:
    """Latency percentiles, time to first token and throughput of one request at a time."""
    if not measurements:
        return {"stream_prompts": 0, **dict.fromkeys(STREAM_KEYS)}
    latencies = [m.latency_s for m in measurements]
    first_tokens = [m.ttft_s for m in measurements]
    tokens = sum(m.new_tokens for m in measurements)
    return {
        "stream_prompts": len(measurements),
        "latency_mean_s": sum(latencies) / len(latencies),
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "ttft_mean_s": sum(first_tokens) / len(first_tokens),
        "ttft_p50_s": percentile(first_tokens, 50),
        "stream_generated_tokens": tokens,
        "stream_tokens_per_s": tokens / sum(latencies) if sum(latencies) > 0 else 0.0,
    }


def summarize_batched(answers: Sequence[Answer], seconds: float) -> dict[str, Any]:
    """Accuracy over every prompt, and the throughput of generating them all in batches."""
    graded = [a for a in answers if a.correct is not None]
    tokens = sum(a.new_tokens for a in answers)
    return {
        "prompts": len(answers),
        "graded": len(graded),
        "accuracy": sum(bool(a.correct) for a in graded) / len(graded) if graded else None,
        "batched_s": seconds,
        "generated_tokens": tokens,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
    }


def run_single_stream(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[BenchmarkPrompt],
    settings: ChatSettings,
    *,
    warmup: int = 1,
    progress: bool = True,
) -> list[Measurement]:
    """Time each prompt alone through the streaming path, after ``warmup`` untimed requests."""
    from rich.console import Console
    from rich.progress import track

    warm_settings = ChatSettings(settings.temperature, min(8, settings.max_new_tokens))
    for prompt in list(prompts)[:warmup]:
        measure_request(model, tokenizer, prompt, warm_settings)
    steps: Iterable[BenchmarkPrompt] = prompts
    if progress and prompts:
        steps = track(prompts, description="single stream", console=Console(stderr=True))
    return [measure_request(model, tokenizer, p, settings) for p in steps]


GenerateTexts = Callable[[list[str]], list[str]]


def chat_texts(tokenizer: Any, prompts: Sequence[BenchmarkPrompt]) -> list[str]:
    """Each prompt rendered with the chat template, ready for the model's reply."""
    return [
        tokenizer.apply_chat_template(p.messages, tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]


def run_batched(
    generate: GenerateTexts, tokenizer: Any, prompts: Sequence[BenchmarkPrompt]
) -> tuple[list[Answer], float]:
    """Answer every prompt with ``generate`` (one call: it batches) and time the whole pass.

    Generated tokens are counted by tokenizing each reply, the same way for every engine.
    """
    texts = chat_texts(tokenizer, prompts)
    started = time.perf_counter()
    replies = generate(texts)
    seconds = time.perf_counter() - started
    answers = [
        Answer(
            label=prompt.label,
            response=reply,
            new_tokens=len(tokenizer(reply, add_special_tokens=False)["input_ids"]),
            answer=prompt.answer,
        )
        for prompt, reply in zip(prompts, replies, strict=True)
    ]
    score_answers(answers)
    return answers, seconds


def transformers_generator(
    model: Any, tokenizer: Any, settings: ChatSettings, *, batch_size: int, seed: int,
    progress: bool = True,
) -> GenerateTexts:  # fmt: skip
    """Batched transformers ``generate`` (the path ``eval_code.py`` uses), one reply a prompt."""
    from autolearn.evaluation import generate_completions

    generation = _generation_settings(settings, batch_size, seed)

    def generate(texts: list[str]) -> list[str]:
        groups = generate_completions(
            model, tokenizer, texts, generation, (), add_special_tokens=False, progress=progress
        )
        return [group[0] for group in groups]

    return generate


def vllm_generator(model_name: str, settings: ChatSettings, *, seed: int) -> GenerateTexts:
    """vLLM (the path ``eval_code.py`` uses), all prompts in one call. GPU only."""
    from autolearn.evaluation import load_vllm, vllm_generate

    llm, vllm_tokenizer = load_vllm(model_name, seed)
    generation = _generation_settings(settings, batch_size=1, seed=seed)

    def generate(texts: list[str]) -> list[str]:
        ids = [vllm_tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
        return [group[0] for group in vllm_generate(llm, ids, generation, ())]

    return generate


def _generation_settings(settings: ChatSettings, batch_size: int, seed: int) -> Any:
    from autolearn.evaluation import GenerationSettings

    return GenerationSettings(
        n_samples=1,
        temperature=settings.temperature,
        max_new_tokens=settings.max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        prompt_style="chat",
    )


def release_gpu(model: Any) -> None:
    """Move ``model`` off the GPU and return the memory, so that vLLM can claim its share."""
    import gc

    import torch

    if getattr(model.device, "type", "cpu") == "cuda":
        model.to("cpu")
        gc.collect()
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class BenchmarkOptions:
    """How the benchmark runs: its two passes and their engines."""

    engine: str = "transformers"  # batched pass: transformers | vllm
    model_name: str = ""  # what vLLM loads
    stream_prompts: int = 8  # prompts timed one at a time (the first N)
    batch_size: int = 8  # transformers batched pass
    warmup: int = 1
    seed: int = 42
    progress: bool = True


def run_benchmark(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[BenchmarkPrompt],
    settings: ChatSettings,
    options: BenchmarkOptions | None = None,
) -> BenchmarkReport:
    """Two passes: the first ``stream_prompts`` one at a time (latency, time to first token),
    then every prompt batched with ``options.engine`` (accuracy, throughput).

    The single-stream pass always uses transformers' streaming path; with vLLM the model then
    leaves the GPU, and peak memory is that of the transformers passes.
    """
    options = options or BenchmarkOptions()
    reset_peak_memory(model)
    measurements = run_single_stream(
        model, tokenizer, list(prompts)[: options.stream_prompts], settings,
        warmup=options.warmup if options.stream_prompts else 0, progress=options.progress,
    )  # fmt: skip
    if options.engine == "vllm":
        memory_mb, memory_kind = peak_memory(model)
        release_gpu(model)
        generate = vllm_generator(options.model_name, settings, seed=options.seed)
    else:
        generate = transformers_generator(
            model, tokenizer, settings, batch_size=options.batch_size, seed=options.seed,
            progress=options.progress,
        )  # fmt: skip
    logger.info("batched pass: %s with %s", plural(len(prompts), "prompt"), options.engine)
    answers, seconds = run_batched(generate, tokenizer, prompts)
    if options.engine != "vllm":
        memory_mb, memory_kind = peak_memory(model)
    summary = {
        **summarize_batched(answers, seconds),
        "engine": options.engine,
        "batch_size": options.batch_size if options.engine == "transformers" else None,
        **summarize_stream(measurements),
        "peak_memory_mb": round(memory_mb, 1),
        "memory_kind": memory_kind,
    }
    return BenchmarkReport(summary, measurements, answers)


def _seconds(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.3f}"


def benchmark_table(summary: dict[str, Any], title: str = "inference benchmark") -> Table:
    """The benchmark summary as a rich table: the batched rows, then the single-stream rows."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    accuracy = summary["accuracy"]
    stream = summary["stream_prompts"]
    engine = summary["engine"]
    batching = f"batches of {summary['batch_size']}" if summary.get("batch_size") else "one call"
    rows = [
        ("prompts", str(summary["prompts"])),
        (
            "accuracy",
            "n/a (no answers)"
            if accuracy is None
            else f"{accuracy:.3f} ({summary['graded']} graded)",
        ),
        (f"batched: engine ({batching})", engine),
        ("batched: time (s)", f"{summary['batched_s']:.3f}"),
        ("batched: generated tokens", str(summary["generated_tokens"])),
        ("batched: generated tokens/s", f"{summary['tokens_per_s']:.1f}"),
        ("single stream: prompts (transformers, streamed)", str(stream)),
        ("single stream: latency mean (s)", _seconds(summary["latency_mean_s"])),
        ("single stream: latency p50 (s)", _seconds(summary["latency_p50_s"])),
        ("single stream: latency p95 (s)", _seconds(summary["latency_p95_s"])),
        ("single stream: time to first token mean (s)", _seconds(summary["ttft_mean_s"])),
        ("single stream: time to first token p50 (s)", _seconds(summary["ttft_p50_s"])),
        (
            "single stream: generated tokens/s",
            "not measured"
            if summary["stream_tokens_per_s"] is None
            else f"{summary['stream_tokens_per_s']:.1f}",
        ),
        (f"peak memory (MiB, {summary['memory_kind']})", f"{summary['peak_memory_mb']:.1f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def write_report(path: Path, report: BenchmarkReport) -> None:
    """Save the benchmark report as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n", "utf-8")

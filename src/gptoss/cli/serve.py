"""`gptoss serve`: the OpenAI-compatible HTTP server (Responses, Chat Completions, Completions) for a checkpoint.

The socket opens at once and the model loads in a background thread: /health answers 503 until it is ready, so
orchestrators can tell "starting" from "down".
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gptoss.cli.__main__ import UserError

if TYPE_CHECKING:
    from rich.console import Console

    from gptoss.engine import BatchConfig, BatchedModelSource
    from gptoss.engine.engine import Source
    from gptoss.runtime import Model
    from gptoss.server import ServerConfig
    from gptoss.tools import BrowserTool, PythonTool

    Loaded = Callable[[Source | None, BaseException | None], None]
    SourceFactory = Callable[[BatchConfig], BatchedModelSource]
    TpSource = Callable[[BatchConfig, Callable[[BaseException], None]], BatchedModelSource]

HELP = "serve the OpenAI-compatible API (Responses, Chat Completions, Completions) for a checkpoint"
EFFORTS = ("low", "medium", "high")
DTYPES = {"bf16": "bfloat16", "fp32": "float32"}
log = logging.getLogger("gptoss.serve")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The options `serve` and `chat` share."""
    p.add_argument("--model", metavar="DIR|ORG/NAME[@REV]",
                   help="checkpoint folder, or a Hugging Face model name (from the local cache, else downloaded); "
                   "without it the built-in demo model; 'tiny-random': a tiny random one (tests)")  # fmt: skip
    p.add_argument("--context", type=int, default=None, help="context limit in tokens (default: the model's)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--lora", type=Path, default=None, metavar="DIR", help="PEFT LoRA adapter to run on the model")
    add_device_argument(p)


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: one NVIDIA GPU (packed MXFP4 weights, triton kernels, CUDA-graph decode)")  # fmt: skip


def check_device(args: argparse.Namespace) -> None:
    """--device cuda is refused up front (one line, exit 2) where it cannot run, or with options it lacks."""
    if args.device != "cuda":
        return
    if getattr(args, "tp", 1) > 1:
        raise UserError("--device cuda runs on one GPU: --tp is for CPU ranks")
    if getattr(args, "lora", None) is not None:
        raise UserError("--lora runs on the CPU only (not with --device cuda)")
    import torch

    from gptoss.gpu import cuda_unavailable

    why = cuda_unavailable(torch.device("cuda"))
    if why is not None:
        raise UserError(f"--device cuda: {why}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("GPTOSS_API_KEY"), help="require 'Authorization: Bearer KEY' "
                   "(default: $GPTOSS_API_KEY; none = no authentication)")  # fmt: skip
    p.add_argument("--max-queue", type=int, default=16, help="requests that may wait; more get HTTP 429")
    p.add_argument("--reasoning-effort", choices=EFFORTS, default="medium", help="when a request names none")
    p.add_argument("--served-model-name", default=None, help="model id clients use (default: the folder's name)")
    p.add_argument("--store", type=Path, default=None, help="SQLite file for stored responses (default: user data)")
    p.add_argument("--store-max-mb", type=int, default=512, help="size bound of the response store")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.add_argument("--drain-s", type=float, default=30.0, help="on SIGTERM/SIGINT, seconds in-flight requests get to "
                   "finish before they are cancelled (default 30)")  # fmt: skip
    p.add_argument("--header-timeout-s", type=float, default=10.0,
                   help="a request's line and headers must arrive within this (default 10)")  # fmt: skip
    p.add_argument("--body-timeout-s", type=float, default=60.0,
                   help="a request body must arrive within this after its headers (default 60)")  # fmt: skip
    batch = p.add_argument_group("continuous batching and the KV cache")
    batch.add_argument("--max-running", type=int, default=8, help="sequences generated together (default 8)")
    batch.add_argument("--max-step-tokens", type=int, default=256,
                       help="tokens per forward pass: all decode tokens, then prompt chunks (default 256)")  # fmt: skip
    batch.add_argument("--kv-cache-gb", type=float, default=None,
                       help="KV cache pool size (default: half the available memory beside the weights, at most "
                       "what --max-running full-context sequences need)")  # fmt: skip
    batch.add_argument("--no-prefix-cache", action="store_true", help="never reuse KV blocks across requests")
    p.add_argument("--max-reasoning-tokens", type=int, default=2048, metavar="N",
                   help="free reasoning a structured (constrained) turn may spend before its JSON or call must start; "
                   "capped at half of a request's output limit (default 2048)")  # fmt: skip
    from gptoss.distributed.cli import add_arguments as add_tp_arguments

    add_tp_arguments(p)
    tools = p.add_argument_group("built-in tools (Responses `web_search` / `code_interpreter`)")
    tools.add_argument("--browser-dir", type=Path, default=None, metavar="DIR",
                       help="offer the browser over an offline index of DIR's .html/.md/.txt/.rst files")  # fmt: skip
    tools.add_argument("--browser-web", action="store_true",
                       help="let the browser also open http(s) pages (SSRF-guarded); needs --browser-dir")  # fmt: skip
    tools.add_argument("--python", action="store_true", help="offer the sandboxed python tool (needs bubblewrap)")
    tools.add_argument("--max-tool-rounds", type=int, default=16,
                       help="built-in tool calls per response before it ends incomplete (default 16)")  # fmt: skip


def check_arguments(args: argparse.Namespace) -> None:
    checks = [
        (0 <= args.port <= 65535, f"--port must be in 0..65535, got {args.port}"),
        (args.max_queue >= 0, f"--max-queue must be >= 0, got {args.max_queue}"),
        (args.drain_s >= 0, f"--drain-s must be >= 0, got {args.drain_s:g}"),
        (args.header_timeout_s > 0, f"--header-timeout-s must be positive, got {args.header_timeout_s:g}"),
        (args.body_timeout_s > 0, f"--body-timeout-s must be positive, got {args.body_timeout_s:g}"),
        (args.context is None or args.context > 0, f"--context must be positive, got {args.context}"),
        (args.store_max_mb > 0, f"--store-max-mb must be positive, got {args.store_max_mb}"),
        (args.max_tool_rounds >= 0, f"--max-tool-rounds must be >= 0, got {args.max_tool_rounds}"),
        (args.max_reasoning_tokens >= 0, f"--max-reasoning-tokens must be >= 0, got {args.max_reasoning_tokens}"),
        (args.max_running >= 1, f"--max-running must be >= 1, got {args.max_running}"),
        (args.max_step_tokens >= 1, f"--max-step-tokens must be >= 1, got {args.max_step_tokens}"),
        (args.kv_cache_gb is None or args.kv_cache_gb > 0, f"--kv-cache-gb must be positive, got {args.kv_cache_gb}"),
        (not args.browser_web or args.browser_dir is not None, "--browser-web needs --browser-dir (the search index)"),
        (args.browser_dir is None or args.browser_dir.is_dir(), f"--browser-dir {args.browser_dir}: no such directory"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    check_device(args)


def bind(host: str, port: int) -> socket.socket:
    """Takes the port before anything slow starts: a busy port is one clear line and exit 2, not uvicorn's error
    after the model has loaded. uvicorn then serves on this very socket (no window for another process)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as e:
        raise UserError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart over TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        hint = " (another server is running there? pick another --port)" if e.errno == errno.EADDRINUSE else ""
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror}{hint}") from None
    return sock


TINY_RANDOM = "tiny-random"


def resolve_checkpoint(model: str | None, console: Console) -> Path:
    """--model, checked now (a bad path fails before anything starts): a folder, a Hugging Face name (the cache,
    else a download), `tiny-random`, or without it the built-in demo model (gptoss.demo.shipped)."""
    from gptoss.hub import is_hub_name, resolve
    from gptoss.weights import open_checkpoint

    if model == TINY_RANDOM:
        return tiny_random(console, "--model tiny-random")
    if model is not None and is_hub_name(model):
        console.print(f"[dim]{model}: looking in the Hugging Face cache (then the hub)[/]", highlight=False)
        path = resolve(model)  # CheckpointError (a ValueError: exit 2 with its message) saying what to run
        console.print(f"[dim]{model}: {path}[/]", highlight=False)
        return path
    if model is not None:
        open_checkpoint(model)  # CheckpointError for a bad folder
        return Path(model)
    return demo(console)


def demo(console: Console) -> Path:
    from gptoss.demo import shipped

    if not shipped.available():
        return tiny_random(console, "No --model given")
    path, expanded = shipped.ensure_demo()
    state = "unpacked it now" if expanded else "unpacked earlier"
    console.print(
        f"[bold]No --model given: using the built-in demo model at {path} ({state}).[/] It is a tiny GPT-OSS "
        "(about 2M parameters) trained on synthetic tasks only: arithmetic with the python tool (start with "
        "--python), calling your functions, extracting fields as JSON, greetings. It knows nothing else. Pass "
        "--model DIR for a real gpt-oss checkpoint.",
        highlight=False,
    )
    return path


def tiny_random(console: Console, why: str) -> Path:
    from gptoss.engine.loader import ensure_tiny_random

    path, created = ensure_tiny_random()
    state = "created it now" if created else "created earlier"
    console.print(
        f"[bold yellow]{why}: using a tiny RANDOM checkpoint at {path} ({state}). Its weights are "
        "random, so its output is noise. Pass --model DIR to use a real gpt-oss checkpoint.[/]"
    )
    return path


def load_with_progress(
    path: Path, context: int | None, dtype: str, console: Console, lora: Path | None = None, device: str = "cpu"
) -> Model:
    """Reads the weights through once with a byte progress bar, then loads (from the page cache)."""
    import torch
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    import gptoss
    from gptoss.engine.loader import read_through, weight_files

    columns = (TextColumn("loading weights"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("weights", total=None)
        read_through(weight_files(path), lambda done, total: progress.update(task, completed=done, total=total))
    model = gptoss.load(path, device=device, dtype=getattr(torch, DTYPES[dtype]), context_length=context)
    if lora is not None:
        from gptoss.finetune.peft_io import attach_adapter

        attach_adapter(model, lora)
    return model


def batch_config(args: argparse.Namespace) -> BatchConfig:
    from gptoss.engine import BatchConfig

    kv_bytes = None if args.kv_cache_gb is None else int(args.kv_cache_gb * (1 << 30))
    return BatchConfig(args.max_running, args.max_step_tokens, kv_bytes, prefix_cache=not args.no_prefix_cache)


def load_in_background(
    args: argparse.Namespace, path: Path, console: Console, on_done: Loaded, make_source: SourceFactory | None = None
) -> threading.Thread:
    def work() -> None:
        from gptoss.engine import BatchedModelSource
        from gptoss.server.generation import harmony

        try:
            if make_source is not None:  # --tp: rank 0's slices of the model, serving with the other ranks
                source: BatchedModelSource = make_source(batch_config(args))
            else:
                model = load_with_progress(path, args.context, args.dtype, console, args.lora, args.device)
                source = BatchedModelSource(model, batch_config(args))
            harmony()  # the tokenizer's first use builds its tables: do it now, not on the first request
            log.info(
                "KV cache: %d blocks of %d tokens (%.2f GB), up to %d tokens for one request",
                source.pool.num_blocks, source.config.block_size, source.storage.nbytes / (1 << 30),
                source.tokens_that_fit(),
            )  # fmt: skip
            on_done(source, None)
        except Exception as e:
            on_done(None, e)

    thread = threading.Thread(target=work, name="gptoss-load", daemon=True)
    thread.start()
    return thread


def server_config(args: argparse.Namespace, path: Path) -> ServerConfig:
    from gptoss.engine.loader import served_name
    from gptoss.server import ServerConfig
    from gptoss.server.config import default_store_path

    browser, python, python_unavailable = builtin_tools(args)
    return ServerConfig(
        model_name=args.served_model_name or served_name(path),
        api_key=args.api_key or None,
        default_effort=args.reasoning_effort,
        store_path=args.store or default_store_path(),
        store_max_bytes=args.store_max_mb << 20,
        browser=browser,
        python=python,
        python_unavailable=python_unavailable,
        max_tool_rounds=args.max_tool_rounds,
        max_reasoning_tokens=args.max_reasoning_tokens,
    )


def builtin_tools(
    args: argparse.Namespace,
) -> tuple[Callable[[], BrowserTool] | None, Callable[[], PythonTool] | None, str | None]:
    """(browser factory, python factory, why python cannot run): each response gets fresh tool instances; the
    index and the sandbox pool are shared."""
    from gptoss.tools import BrowserTool, LocalIndex, PythonTool, SandboxPool, WebFetcher

    browser: Callable[[], BrowserTool] | None = None
    if args.browser_dir is not None:
        index = LocalIndex(args.browser_dir)
        web = bool(args.browser_web)

        def browser() -> BrowserTool:
            return BrowserTool([index, WebFetcher()] if web else [index])

        log.info("browser: offline index of %s%s", args.browser_dir, " and the web" if web else "")
    python: Callable[[], PythonTool] | None = None
    unavailable: str | None = None
    if args.python:
        pool = SandboxPool()
        unavailable = pool.unavailable_reason()
        if unavailable is not None:
            log.warning("python tool unavailable (code_interpreter requests get 400): %s", unavailable)

        def python() -> PythonTool:
            return PythonTool(pool)

    return browser, python, unavailable


def run(args: argparse.Namespace) -> int:
    from gptoss.hub import is_hub_name
    from gptoss.weights import open_checkpoint

    check_arguments(args)
    if args.model not in (None, TINY_RANDOM) and not is_hub_name(args.model):
        open_checkpoint(args.model)  # a bad folder fails before the port is taken (a name resolves after)
    if args.tp > 1:
        from gptoss.distributed.cli import serve_ranks

        return serve_ranks(args, lambda: bind(args.host, args.port), serve_on)
    with bind(args.host, args.port) as sock:
        return serve_on(sock, args)


def serve_on(sock: socket.socket, args: argparse.Namespace, tp: TpSource | None = None) -> int:
    """Exit status 0 after a clean stop (SIGTERM/SIGINT: drained, engine closed); 2 for a model that cannot be
    loaded (UserError), as for bad arguments and a busy port (run); 1 when a --tp rank failed (`tp` makes rank 0's
    source and calls back on such a failure)."""
    from rich.console import Console

    from gptoss.engine import Engine
    from gptoss.server import create_app
    from gptoss.server.edge import DrainingServer, HttpLimits, uvicorn_config

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    console = Console(stderr=True)
    path = resolve_checkpoint(args.model, console)
    config = server_config(args, path)
    engine = Engine(None, max_queue=args.max_queue)
    app = create_app(engine, config)
    state = app.state.gptoss
    on_reject = state.metrics.count_rejected
    limits = HttpLimits(args.header_timeout_s, args.body_timeout_s)
    http = uvicorn_config(app, args.host, args.port, limits, log_level=args.log_level, on_reject=on_reject)
    server = DrainingServer(http, args.drain_s, state.inflight.cancel_all)
    failure: list[BaseException] = []

    def loaded(source: Source | None, error: BaseException | None) -> None:
        if error is not None:
            failure.append(error)
            server.should_exit = True
            return
        assert source is not None
        from gptoss.harmony.constraint import tokenizer
        from gptoss.server.generation import harmony

        tokenizer(harmony())  # the grammar engine's vocabulary (~1 s), built now rather than in the first request
        engine.attach(source)
        log.info(
            "model %r ready, context %d tokens, store %s", config.model_name, engine.context_length, config.store_path
        )

    def group_failed(error: BaseException) -> None:  # from the engine's thread: stop serving, exit 1
        log.error("%s; the server stops", error)
        group_failure.append(error)
        server.should_exit = True

    group_failure: list[BaseException] = []
    make_source: SourceFactory | None = None
    if tp is not None:
        make_tp = tp

        def make_source(config: BatchConfig) -> BatchedModelSource:
            return make_tp(config, group_failed)

    load_in_background(args, path, console, loaded, make_source)
    server.run(sockets=[sock])
    engine.close()
    if group_failure:
        return 1
    if failure:
        raise UserError(f"could not load the model from {path}: {failure[0]}")
    stopped_by = ", ".join(signal.Signals(s).name for s in server.signals) or "request"
    log.info("stopped (%s); the engine is closed", stopped_by)
    return 0

"""`--tp N` for the commands: join torchrun's group, load this rank's slices, and let rank 0 drive.

Rank 0 runs the command as usual (printing, benchmarking, serving); the other ranks follow it and print nothing.
A failed collective ends every rank with exit status 1 and one line saying which collective and why.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from gptoss.distributed.group import DEFAULT_TIMEOUT_S, CollectiveError, Comm, close, init
from gptoss.distributed.transformer import DistributedTransformer
from gptoss.runtime import Model

if TYPE_CHECKING:
    from gptoss.engine.batched import BatchConfig, BatchedModelSource

    TpSource = Callable[[BatchConfig, Callable[[BaseException], None]], BatchedModelSource]


def add_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("tensor + expert parallelism (launch with torchrun --nproc-per-node N)")
    group.add_argument("--tp", type=int, default=1, metavar="N",
                       help="split the model over N processes started by torchrun (default 1: no split)")  # fmt: skip
    group.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                       help="seconds a collective may wait for another rank before failing (default 60)")  # fmt: skip


def check(args: argparse.Namespace) -> str | None:
    """Why the --tp options are bad, or None."""
    if args.tp < 1:
        return f"--tp must be >= 1, got {args.tp}"
    if args.dist_timeout <= 0:
        return f"--dist-timeout must be positive, got {args.dist_timeout:g}"
    return None


def leader_of(model: Model) -> DistributedTransformer:
    t = model.transformer
    assert isinstance(t, DistributedTransformer)
    return t


def join(args: argparse.Namespace, dtype: torch.dtype, context: int | None) -> tuple[Comm, Model]:
    from gptoss import distributed

    comm = init(args.tp, args.dist_timeout)
    return comm, distributed.load(args.model, comm, dtype, context)


def run_ranks(
    args: argparse.Namespace, command: str, dtype: torch.dtype, context: int | None, lead: Callable[[Model], int]
) -> int:
    """Rank 0 runs `lead(model)`, then releases the followers; the others follow. Exit status per rank."""
    from gptoss.distributed.follower import Follower, stop_followers

    comm, model = join(args, dtype, context)
    try:
        if not comm.leader:
            Follower(model).run()
            return 0
        status = lead(model)
        stop_followers(leader_of(model))
        return status
    except CollectiveError as e:
        print(f"gptoss {command}: error: {e}", file=sys.stderr)
        return 1
    finally:
        close()


def serve_ranks(
    args: argparse.Namespace,
    bind: Callable[[], socket.socket],
    serve_on: Callable[[socket.socket, argparse.Namespace, TpSource], int],
) -> int:
    """`gptoss serve --tp N`: rank 0 serves HTTP and runs the scheduler; the others follow each batched step."""
    from gptoss import distributed
    from gptoss.cli.__main__ import UserError
    from gptoss.distributed.follower import Follower, Heartbeat, stop_followers
    from gptoss.distributed.serving import DistributedBatchedSource
    from gptoss.hub import is_hub_name

    if args.model is None or is_hub_name(args.model):
        raise UserError("--tp needs --model DIR, a local checkpoint folder every rank loads its slices from")
    if args.lora is not None:
        raise UserError("--lora cannot be combined with --tp (adapters are not split across ranks)")
    dtype = getattr(torch, {"bf16": "bfloat16", "fp32": "float32"}[args.dtype])
    comm = init(args.tp, args.dist_timeout)
    beats: list[Heartbeat] = []
    try:
        if not comm.leader:
            for sig in (signal.SIGINT, signal.SIGTERM):  # torchrun passes them on: rank 0 drains, then says Stop
                signal.signal(sig, signal.SIG_IGN)
            Follower(distributed.load(args.model, comm, dtype, args.context)).run()
            return 0

        def make_source(config: BatchConfig, on_failure: Callable[[BaseException], None]) -> DistributedBatchedSource:
            model = distributed.load(args.model, comm, dtype, args.context)
            source = DistributedBatchedSource(model, config, on_failure)
            beats.append(Heartbeat(leader_of(model), args.dist_timeout / 4, source.fail))
            return source

        with bind() as sock:
            status = serve_on(sock, args, make_source)
        for beat in beats:
            beat.stop()
        if status == 0 and beats:
            stop_followers(beats[0].t)
        return status
    except CollectiveError as e:
        print(f"gptoss serve: error: {e}", file=sys.stderr)
        return 1
    finally:
        close()

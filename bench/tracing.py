"""What the benchmarks share to measure tracing: the command-line options, the
environment that turns it on against a local collector, and how that collector is
reported."""

from __future__ import annotations

import argparse
import statistics

from service_testing import OtlpReceiver


def add_tracing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracing",
        nargs="+",
        default=["off"],
        choices=["off", "on"],
        help="on: every process exports its spans by OTLP to a local collector",
    )
    parser.add_argument(
        "--sampler-arg",
        type=float,
        default=1.0,
        help="with tracing on, the share of traces kept (OTEL_TRACES_SAMPLER_ARG)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the --tracing modes alternately this many times: tracing is then judged by "
        "the median of each round's on/off ratios (one run differs from the next by about "
        "8%%, which is more than the 5%% tracing is allowed)",
    )


def tracing_env(args: argparse.Namespace, collector: OtlpReceiver) -> dict[str, str]:
    """The settings that make every process export to `collector`."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_TRACES_SAMPLER_ARG": str(args.sampler_arg),
    }


def tracing_label(args: argparse.Namespace, tracing: bool) -> str:
    return f"tracing on, {args.sampler_arg:.0%} sampled" if tracing else "tracing off"


def report_collector(collector: OtlpReceiver) -> None:
    print(
        f"  exported to the collector: {collector.batches} batches, "
        f"{collector.bytes_received / 1e6:.1f} MB"
    )


def spread(changes: list[float]) -> str:
    """The median of `changes` (one per round), and their range when there are several."""
    text = f"{statistics.median(changes):+6.1%}"
    if len(changes) > 1:
        text += f" ({min(changes):+.1%} to {max(changes):+.1%})"
    return text

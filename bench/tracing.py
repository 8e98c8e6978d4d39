"""What the benchmarks share to measure tracing: the command-line options, the
environment that turns it on against a local collector, and how that collector is
reported."""

from __future__ import annotations

import argparse

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

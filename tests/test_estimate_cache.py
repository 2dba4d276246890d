"""The cache step of the roofline: cache-resident graphs move bytes at the cache's bandwidth."""

from __future__ import annotations

import dataclasses

import pytest

from edgekd.sizing.onnx_cost import GraphCost, NodeCost
from edgekd.sizing.roofline import estimate_latency
from edgekd.targets import DeviceSpec, load_target, parse_target

# 2 GB/s DRAM, 20 GB/s cache of 1 MiB; compute fast enough that every node here is memory-bound.
DEV = DeviceSpec(
    name="toy",
    fp32_gflops=1000.0,
    int8_gops=1000.0,
    memory_bandwidth_gbs=2.0,
    op_overhead_us=0.0,
    call_overhead_us=0.0,
    cache_mb=1.0,
    cache_bandwidth_gbs=20.0,
)


def graph(weight_bytes: int, activation_bytes: int) -> GraphCost:
    fc = NodeCost("fc", "Gemm", 1, 2, weight_bytes, activation_bytes, 0, "fp32")
    return GraphCost(
        nodes=(fc,),
        macs=1,
        flops=2,
        params=0,
        weight_bytes=weight_bytes,
        peak_activation_bytes=activation_bytes,
        unknown_ops=(),
    )


def test_resident_graph_streams_at_cache_bandwidth():
    # 400 kB weights + 100 kB activations = 500 kB <= 1 MiB: 500e3 B / 20e9 B/s = 25 us.
    est = estimate_latency(graph(400_000, 100_000), DEV)
    assert est.cache_resident and est.total_ms == pytest.approx(0.025)


def test_graph_larger_than_the_cache_streams_from_dram():
    # 1.2 MB > 1 MiB (1,048,576 B): 1.2e6 / 2e9 = 600 us.
    est = estimate_latency(graph(1_100_000, 100_000), DEV)
    assert not est.cache_resident and est.total_ms == pytest.approx(0.6)


def test_no_cache_figures_means_dram_everywhere():
    plain = dataclasses.replace(DEV, cache_mb=0.0, cache_bandwidth_gbs=0.0)
    est = estimate_latency(graph(400_000, 100_000), plain)
    assert not est.cache_resident and est.total_ms == pytest.approx(0.25)


def test_cache_fields_are_optional_in_profiles():
    mobile = load_target("mobile")
    assert mobile.device.cache_mb == 0.0  # shipped profiles do not model a cache
    text = (
        open(mobile.path)
        .read()
        .replace(
            "call_overhead_us = 40.0",
            "call_overhead_us = 40.0\ncache_mb = 4.0\ncache_bandwidth_gbs = 60.0",
        )
    )
    profile = parse_target(text, "with-cache.toml")
    assert profile.device.cache_mb == 4.0 and profile.device.cache_bandwidth_gbs == 60.0

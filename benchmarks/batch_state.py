"""
What reading a batch's ``state.json`` costs a triggerer, by the number of items in flight (``max_in_flight``).

    .venv/bin/python benchmarks/batch_state.py                  # 1,000, 10,000 and 100,000 in flight (~1 min)
    .venv/bin/python benchmarks/batch_state.py --in-flight 1000 50000

The batch trigger reads the state once per deferral (:meth:`SageMakerAsyncBatchInferenceTrigger._read_state`) and
keeps its items in flight while it watches. For each size, a state of that many items in flight (realistic
names and times) is serialised, then parsed: on the event loop itself, and in a thread as the trigger does, while
a 10 ms ticker on the loop records its worst gap (what every other trigger of the triggerer waited). Printed: the
state's size, the parse's wall time, the loop's worst gap each way, and the memory the parsed state holds and
peaks at (``tracemalloc``, the document's bytes not counted). Compare ratios within one run: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import tracemalloc

from _common import markdown_table

from airflow_sagemaker_async.batch.core import BatchState, PendingItem

TAG = "b7e1c0ffee"


def state_json(in_flight: int) -> bytes:
    """Return ``state.json`` of a batch with ``in_flight`` items in flight."""
    state = BatchState(TAG, "ep", in_flight, "s3://bucket/out", "s3://bucket/fail", "2026-12-05T20:00:00+00:00")
    state.next_index = in_flight
    state.pending = [
        PendingItem(
            index=i,
            inference_id=f"ep-{TAG}-{i}",
            input_location=f"s3://bucket/in/{i:06d}.csv",
            output_location=f"s3://bucket/out/{TAG}-{i:06d}.out",
            failure_location=f"s3://bucket/fail/{TAG}-{i:06d}-error.out",
            submitted_at=f"2026-12-05T20:{i // 6000 % 60:02d}:{i // 100 % 60:02d}.{i % 1000000:06d}+00:00",
            deadline=f"2026-12-05T21:{i // 6000 % 60:02d}:{i // 100 % 60:02d}.{i % 1000000:06d}+00:00",
        )
        for i in range(in_flight)
    ]
    return state.to_json().encode()


async def worst_gap_ms(text: bytes, *, in_thread: bool) -> tuple[float, float]:
    """Parse ``text`` on the loop or in a thread; return (parse seconds, the loop's worst gap in ms)."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.1)
    started = time.perf_counter()
    if in_thread:
        await asyncio.to_thread(BatchState.from_json, text)
    else:
        BatchState.from_json(text)
    took = time.perf_counter() - started
    await asyncio.sleep(0.05)
    done.set()
    await ticking
    return took, max(gaps) * 1000


def memory_mb(text: bytes) -> tuple[float, float]:
    """Return (MB the parsed state holds, MB at the parse's peak)."""
    gc.collect()
    tracemalloc.start()
    try:
        parsed = BatchState.from_json(text)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(parsed.pending) == parsed.total
    return held / 1e6, peak / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].strip())
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1000, 10000, 100000])
    args = parser.parse_args()
    rows = []
    for in_flight in args.in_flight:
        text = state_json(in_flight)
        _, on_loop = asyncio.run(worst_gap_ms(text, in_thread=False))
        took, in_thread = asyncio.run(worst_gap_ms(text, in_thread=True))
        held, peak = memory_mb(text)
        rows.append(
            [
                f"{in_flight:,}",
                f"{len(text) / 1e6:.1f}",
                f"{took:.2f}",
                f"{on_loop:.0f}",
                f"{in_thread:.0f}",
                f"{held:.0f}",
                f"{peak:.0f}",
            ]
        )
    headers = ["in flight", "state MB", "parse s", "loop gap ms (on loop)", "loop gap ms (thread)"]
    headers += ["held MB", "peak MB"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()

"""
The soak's notification relay: SageMaker's topics -> a raw relay queue -> (faults) -> the queue triggerers read.

The endpoint's SNS topics deliver to a *relay* queue that nothing in Airflow reads; its threads move each message
to the *notification* queue the triggerers share (``notification_queue_url``), and on the way drops some,
duplicates some and holds some back for minutes. It talks to moto directly (no fault proxy), reads with
long polls of 1 s and stops when told; the counts say what it did.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RelayCounts:
    """What the relay did, by message."""

    received: int = 0
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    delayed: int = 0
    delayed_undelivered: int = 0
    delays: list[float] = field(default_factory=list)


class NotificationRelay:
    """
    Move messages from ``source_url`` to ``target_url`` in threads, with faults.

    :param sqs: a boto3 SQS client of the backend (moto, no proxy).
    :param drop: fraction of messages dropped (never delivered).
    :param duplicate: fraction delivered twice (the copy 0-5 s later).
    :param delay: fraction held back ``delay_range`` seconds (uniform).
    :param seed: of the random choices.
    :param threads: receiving threads, default 4 (under load each moto call is slow; one thread fell behind).
    """

    def __init__(
        self,
        sqs: Any,
        source_url: str,
        target_url: str,
        *,
        drop: float,
        duplicate: float,
        delay: float,
        delay_range: tuple[float, float],
        seed: int,
        threads: int = 4,
    ) -> None:
        self.sqs = sqs
        self.source_url = source_url
        self.target_url = target_url
        self.drop, self.duplicate, self.delay, self.delay_range = drop, duplicate, delay, delay_range
        self.random = random.Random(seed)
        self.counts = RelayCounts()
        self.enabled = threading.Event()  # faults only while set; plain forwarding otherwise
        self._held: list[tuple[float, int, str]] = []
        self._sequence = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"soak-relay-{n}", daemon=True) for n in range(threads)
        ]

    def start(self) -> NotificationRelay:
        """Start the threads."""
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop the threads; messages still held back are counted as undelivered."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.counts.delayed_undelivered = len(self._held)

    def _hold(self, seconds: float, body: str) -> None:
        self._sequence += 1
        heapq.heappush(self._held, (time.monotonic() + seconds, self._sequence, body))

    def _decide(self, messages: list[dict[str, Any]], out: list[str]) -> None:
        """Drop, duplicate, delay or pass each message (under the lock: counts, random, held messages)."""
        with self._lock:
            now = time.monotonic()
            while self._held and self._held[0][0] <= now:
                out.append(heapq.heappop(self._held)[2])
            for message in messages:
                body = message["Body"]
                self.counts.received += 1
                roll = self.random.random() if self.enabled.is_set() else 1.0
                if roll < self.drop:
                    self.counts.dropped += 1
                elif roll < self.drop + self.duplicate:
                    self.counts.duplicated += 1
                    out.append(body)
                    self._hold(self.random.uniform(0, 5), body)
                elif roll < self.drop + self.duplicate + self.delay:
                    self.counts.delayed += 1
                    seconds = self.random.uniform(*self.delay_range)
                    self.counts.delays.append(seconds)
                    self._hold(seconds, body)
                else:
                    out.append(body)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._once()
            except Exception:  # moto busy: try again; the soak's checks tell whether it mattered
                time.sleep(0.5)

    def _once(self) -> None:
        out: list[str] = []
        # Short receives from several threads: under load, moto is slow to answer each call.
        answer = self.sqs.receive_message(QueueUrl=self.source_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = answer.get("Messages") or []
        self._decide(messages, out)
        if not messages and not out:
            time.sleep(0.2)
        for start in range(0, len(out), 10):
            chunk = out[start : start + 10]
            self.sqs.send_message_batch(
                QueueUrl=self.target_url, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(chunk)]
            )
            with self._lock:
                self.counts.forwarded += len(chunk)
        if messages:
            self.sqs.delete_message_batch(
                QueueUrl=self.source_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )

"""Which records a partition has already written, so that a repeated record is dropped.

Producers retry and devices resend: the same reading (`device_id`, `seq`) or appeal (`appeal_id`) can
arrive twice, the second time hours later. Messages are keyed by that field, so every copy lands in
the same partition and the state is per partition: a consumer that takes a partition over rebuilds
it from the partition's bronze rows (`seed`), which is what makes the drop exact across restarts.

- `SeqWindows` (IoT readings): per device, the highest `seq` seen and a bitmap of the last `window`
  sequence numbers. Memory is bounded by devices x window / 8 bytes (71,000 devices x 4,096 seqs
  = 36 MB: at one reading per 35 s, 40 hours of resends). A seq older than the window is looked up
  in bronze itself (`older` returns those), so the answer stays exact.
- `KeySet` (appeals): the set of ids; a district's hotline is thousands a day.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

DEFAULT_WINDOW = 4_096


class SeqWindows:
    """Seen (device, seq) pairs: a sliding bitmap per device."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window <= 0 or window % 8:
            raise ValueError(f"window {window} must be a positive multiple of 8")
        self.window = window
        self._high: dict[str, int] = {}
        self._bits: dict[str, bytearray] = {}

    def __len__(self) -> int:
        return len(self._high)

    def _slot(self, seq: int) -> tuple[int, int]:
        position = seq % self.window
        return position >> 3, 1 << (position & 7)

    def _mark(self, device: str, seq: int) -> None:
        high = self._high.get(device)
        bits = self._bits.get(device)
        if high is None or bits is None:
            bits = bytearray(self.window // 8)
            self._bits[device] = bits
            self._high[device] = seq
        elif seq > high:
            if seq - high >= self.window:
                bits[:] = bytes(len(bits))
            else:
                for cleared in range(high + 1, seq + 1):
                    byte, mask = self._slot(cleared)
                    bits[byte] &= ~mask & 0xFF
            self._high[device] = seq
        byte, mask = self._slot(seq)
        bits[byte] |= mask

    def state(self, device: str, seq: int) -> str:
        """`new`, `seen`, or `older` (before the window: only bronze can tell)."""
        high = self._high.get(device)
        if high is None or seq > high:
            return "new"
        if seq <= high - self.window:
            return "older"
        byte, mask = self._slot(seq)
        return "seen" if self._bits[device][byte] & mask else "new"

    def seed(self, devices: Sequence[str], seqs: Sequence[int]) -> None:
        """Mark stored records (any order): each device's highest seq first, then its window."""
        highest: dict[str, int] = {}
        for device, seq in zip(devices, seqs, strict=True):
            if seq > highest.get(device, -1):
                highest[device] = seq
        for device, seq in highest.items():
            self._mark(device, seq)
        for device, seq in zip(devices, seqs, strict=True):
            if seq > highest[device] - self.window:
                self._mark(device, seq)

    def admit(self, devices: Sequence[str], seqs: Sequence[int]) -> tuple[list[bool], list[int]]:
        """Which records are new, marking them seen (a repeat inside the batch is not new either), and the
        positions of records older than the window, which the caller checks against bronze and then
        passes to `mark`."""
        new: list[bool] = []
        older: list[int] = []
        for position, (device, seq) in enumerate(zip(devices, seqs, strict=True)):
            state = self.state(device, seq)
            if state == "older":
                older.append(position)
                new.append(False)
                continue
            new.append(state == "new")
            if state == "new":
                self._mark(device, seq)
        return new, older

    def mark(self, devices: Iterable[str], seqs: Iterable[int]) -> None:
        for device, seq in zip(devices, seqs, strict=True):
            if self.state(device, seq) == "new":
                self._mark(device, seq)


class KeySet:
    """Seen record ids."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __len__(self) -> int:
        return len(self._seen)

    def seed(self, keys: Iterable[str]) -> None:
        self._seen.update(keys)

    def admit(self, keys: Sequence[str]) -> list[bool]:
        new: list[bool] = []
        for key in keys:
            fresh = key not in self._seen
            new.append(fresh)
            if fresh:
                self._seen.add(key)
        return new

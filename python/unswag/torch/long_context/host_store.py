"""Pinned host memory for what one training step keeps per layer, with the copies
between device and host queued on a side stream so they overlap the compute.

One arena (a single page-locked buffer) holds every slot of a step; a slot is one
chunk of one layer's tensor (layer input, attention output, logsumexp).  The arena is
kept between steps and grows only when a longer sequence needs more.

Ordering, all by CUDA events (the host never waits):
- ``save``: the side stream waits until the compute stream has produced the tensor,
  then copies it out; the tensor's memory is held (``record_stream``) until that copy
  is done.  ``wait_saved`` makes the compute stream wait for the copy before it
  overwrites the source in place.
- ``load``: the side stream copies into a fresh device tensor; the returned handle
  makes the compute stream wait for the copy when the tensor is first used, so a
  load issued one chunk ahead overlaps the current chunk's work.
On the CPU (the tests) the same calls copy synchronously.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Iterable, Tuple

import torch
from torch import Tensor

Key = Tuple
_ALIGN = 512


def _mem_total_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class HostMemoryError(MemoryError):
    """The host cannot hold what the long-context mode keeps there."""


class HostStore:
    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.side = torch.cuda.Stream(device) if self.cuda else None
        self.arena: Tensor | None = None
        self.registered = False
        self.slots: Dict[Key, Tuple[int, Tuple[int, ...], torch.dtype]] = {}
        self.used = 0
        self.saved: Dict[Key, object] = {}

    # ------------------------------------------------------------------ layout

    def plan(self, specs: Iterable[Tuple[Key, Tuple[int, ...], torch.dtype]]) -> int:
        """Lay out one slot per (key, shape, dtype); grows the arena if needed.
        Returns the bytes used."""
        slots, off = {}, 0
        for key, shape, dtype in specs:
            n = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
            slots[key] = (off, tuple(shape), dtype)
            off += (n + _ALIGN - 1) // _ALIGN * _ALIGN
        self._reserve(off)
        self.slots, self.used, self.saved = slots, off, {}
        return off

    def _reserve(self, nbytes: int) -> None:
        if self.arena is not None and self.arena.numel() >= nbytes:
            return
        self.release()
        total = _mem_total_bytes()
        limit = float(os.environ.get("UNSWAG_HOST_FRACTION", "0.9"))
        if total and nbytes > limit * total:
            raise HostMemoryError(
                f"unswag long-context mode: this step keeps {nbytes / 2**30:.1f} GiB on the "
                f"host but the machine has {total / 2**30:.1f} GiB (limit {limit:.0%}, "
                "UNSWAG_HOST_FRACTION); use a shorter context, keep_attention=False (halves "
                "it), or a machine with more memory")
        try:
            arena = torch.empty(max(nbytes, 1), dtype=torch.uint8)
        except RuntimeError as e:
            raise HostMemoryError(f"unswag long-context mode: could not allocate "
                                  f"{nbytes / 2**30:.1f} GiB of host memory: {e}") from None
        if self.cuda:
            # page-lock it so copies are asynchronous DMA; one registration, no rounding
            # up to a power of two as the caching pinned allocator would do
            rc = torch.cuda.cudart().cudaHostRegister(arena.data_ptr(), arena.numel(), 0)
            if int(rc) != 0:
                raise HostMemoryError(
                    f"unswag long-context mode: could not page-lock {nbytes / 2**30:.1f} GiB "
                    f"of host memory (cudaHostRegister error {int(rc)}); raise the locked-"
                    "memory limit, use a shorter context or keep_attention=False")
            self.registered = True
        self.arena = arena

    def release(self) -> None:
        if self.arena is not None and self.registered:
            if self.side is not None:
                self.side.synchronize()
            torch.cuda.cudart().cudaHostUnregister(self.arena.data_ptr())
        self.arena, self.registered, self.slots, self.used = None, False, {}, 0

    def __del__(self):
        try:
            self.release()
        except Exception:  # interpreter shutdown: CUDA may be gone
            pass

    @property
    def capacity(self) -> int:
        return 0 if self.arena is None else self.arena.numel()

    def view(self, key: Key) -> Tensor:
        off, shape, dtype = self.slots[key]
        n = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        return self.arena[off:off + n].view(dtype).view(shape)

    # ------------------------------------------------------------------ copies

    def save(self, key: Key, t: Tensor) -> None:
        dst = self.view(key)
        if tuple(t.shape) != tuple(dst.shape) or t.dtype != dst.dtype:
            raise RuntimeError(f"unswag host store: slot {key} is {tuple(dst.shape)} "
                               f"{dst.dtype}, got {tuple(t.shape)} {t.dtype}")
        if not self.cuda:
            dst.copy_(t)
            return
        ready = torch.cuda.current_stream(self.device).record_event()
        with torch.cuda.stream(self.side):
            self.side.wait_event(ready)
            dst.copy_(t, non_blocking=True)
            self.saved[key] = self.side.record_event()
        t.record_stream(self.side)

    def wait_saved(self, key: Key) -> None:
        ev = self.saved.pop(key, None)
        if ev is not None:
            torch.cuda.current_stream(self.device).wait_event(ev)

    def load(self, key: Key) -> Callable[[], Tensor]:
        """Starts copying a slot to the device; call the result to get the tensor."""
        src = self.view(key)
        dst = torch.empty(src.shape, dtype=src.dtype, device=self.device)
        if not self.cuda:
            dst.copy_(src)
            return lambda: dst
        compute = torch.cuda.current_stream(self.device)
        free = compute.record_event()  # dst's memory is free for the compute stream here
        with torch.cuda.stream(self.side):
            self.side.wait_event(free)
            dst.copy_(src, non_blocking=True)
            done = self.side.record_event()

        def get() -> Tensor:
            compute.wait_event(done)
            return dst
        return get

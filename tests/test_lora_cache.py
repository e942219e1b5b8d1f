"""Adapter residency against hand-walked cases of vLLM's LRU worker manager."""

from __future__ import annotations

import numpy as np
import pytest

from adaptergym.profile import LoadTimeModel
from adaptergym.twin.lora_cache import LoraCache, visit_order

IDS = ("a", "b", "c", "d", "e")
COPY_MS, DISK_MS = 5.0, 20.0


def cache(max_loras: int, max_cpu_loras: int = 8) -> tuple[LoraCache, list[int]]:
    """A cache over five rank-16 adapters, and their indices in the order vLLM's walk visits them."""
    lora = LoraCache(max_loras, max_cpu_loras, np.full(len(IDS), 16), LoadTimeModel({"16": COPY_MS}, {"16": DISK_MS}),
                     IDS)
    return lora, sorted(range(len(IDS)), key=lambda i: visit_order(IDS[i]))


def run_batch(lora: LoraCache, batch: set[int], step: int, entering: set[int] | None = None) -> float:
    """What the engine does in a step whose batch is ``batch``, ``entering`` (default: all) having just joined
    it: walk the batch if one of them is not on the GPU, or if a runtime load evicted one of the batch."""
    missing = [lora.enter(a, step) for a in sorted(batch if entering is None else entering)]
    return lora.apply(batch, step) if any(missing) or lora.must_reload else 0.0


def test_first_use_loads_from_disk_then_copies_once():
    lora, (w0, w1, w2, _, _) = cache(max_loras=3)
    assert run_batch(lora, {w0, w1, w2}, 0) == pytest.approx(3 * (DISK_MS + COPY_MS))
    assert (lora.loads_from_disk, lora.loads_from_cpu) == (3, 3)
    assert not lora.enter(w1, 5)  # resident: nothing to load


def test_a_swap_into_a_full_batch_cascades_through_the_walk():
    # Three slots hold w1, w2, w3, all in the batch until step 4, when w3's last request finishes. At step 5 w0
    # arrives. The walk visits w0 first: the least recently used is w1 (touched first in step 4), still in the
    # batch, so it is evicted; the walk reloads it from CPU, evicting w2, then reloads w2, evicting w3.
    lora, (w0, w1, w2, w3, _) = cache(max_loras=3)
    run_batch(lora, {w1, w2, w3}, 0)
    lora.leave(w3, 4)
    assert run_batch(lora, {w0, w1, w2}, 5, {w0}) == pytest.approx(DISK_MS + 3 * COPY_MS)
    assert (lora.loads_from_disk, lora.loads_from_cpu) == (4, 6)
    assert not any(lora.enter(a, 6) for a in (w0, w1, w2))  # all resident again


def test_a_swap_evicts_the_adapter_that_left_when_the_walk_meets_it_first():
    # Same, but w1 (visited before the others) is the one that left: it is the least recently used, no cascade.
    lora, (w0, w1, w2, w3, _) = cache(max_loras=3)
    run_batch(lora, {w1, w2, w3}, 0)
    lora.leave(w1, 4)
    assert run_batch(lora, {w0, w2, w3}, 5, {w0}) == pytest.approx(DISK_MS + COPY_MS)


def test_recency_is_the_last_step_in_a_batch_not_the_load():
    # w0 is loaded at step 0 and stays in the batch until step 10; w1 joins at step 2 and leaves at step 3. A
    # new adapter at step 11 evicts w1 (idle since step 3), although w0 was loaded first.
    lora, (w0, w1, w2, _, _) = cache(max_loras=2)
    run_batch(lora, {w0}, 0)
    run_batch(lora, {w0, w1}, 2, {w1})
    lora.leave(w1, 3)
    lora.leave(w0, 10)
    run_batch(lora, {w2}, 11)
    assert not lora.enter(w0, 12) and lora.enter(w1, 12)


def test_a_full_cpu_cache_evicts_its_least_recent_adapter_from_both_tiers():
    lora, (w0, w1, w2, _, _) = cache(max_loras=2, max_cpu_loras=2)
    run_batch(lora, {w0, w1}, 0)
    lora.leave(w0, 3)
    assert run_batch(lora, {w1, w2}, 4, {w2}) == pytest.approx(DISK_MS + COPY_MS)
    lora.leave(w1, 6)
    lora.leave(w2, 6)
    assert run_batch(lora, {w0}, 7) == pytest.approx(DISK_MS + COPY_MS)  # w0 left the CPU cache too


# Runtime loads (vLLM's add_lora, between two steps) evict the least recently used adapter of each full tier. The
# batch's adapters were touched in the last step's walk, so a load takes them only from a tier that holds no other;
# the adapter loaded is then the most recent of all. vLLM's next step applies the batch's adapters again, reloading
# the one evicted, which evicts the next least recent: the batch's other adapter, not yet walked, before the one
# just loaded. So with two running adapters the reload cascades through both.


def test_a_load_into_a_cpu_cache_holding_only_the_batch_evicts_one_and_the_next_step_reloads_both():
    lora, (w0, w1, w2, _, _) = cache(max_loras=2, max_cpu_loras=2)
    run_batch(lora, {w0, w1}, 0)
    # w0 (walked first at step 4) leaves both tiers; w2 is read from disk and copied into w0's slot.
    assert lora.load(w2, {w0, w1}, 5) == pytest.approx(DISK_MS + COPY_MS)
    assert lora.must_reload and lora.enter(w0, 5) is True  # w0 runs on but is resident nowhere
    # Step 5 (nothing enters): w0 back from disk, evicting w1 (older than w2), then w1 back, evicting w2.
    assert run_batch(lora, {w0, w1}, 5, set()) == pytest.approx(2 * (DISK_MS + COPY_MS))
    assert (lora.loads_from_disk, lora.loads_from_cpu) == (5, 5) and not lora.must_reload
    assert run_batch(lora, {w0, w1}, 6, set()) == 0.0 and lora.enter(w2, 7)  # w2 is gone, the batch resident


def test_a_load_into_slots_holding_only_the_batch_evicts_one_from_the_gpu_and_the_next_step_copies_both():
    lora, (w0, w1, w2, _, _) = cache(max_loras=2, max_cpu_loras=4)
    run_batch(lora, {w0, w1}, 0)
    assert lora.load(w2, {w0, w1}, 5) == pytest.approx(DISK_MS + COPY_MS)  # room in CPU memory; w0 leaves a slot
    assert run_batch(lora, {w0, w1}, 5, set()) == pytest.approx(2 * COPY_MS)  # no disk read: both were in CPU
    assert lora.loads_from_disk == 3 and lora.cached == 3 and lora.enter(w2, 6)  # w2 left for CPU memory


def test_a_load_evicts_an_adapter_outside_the_batch_first_and_the_batch_needs_no_reload():
    lora, (w0, w1, w2, w3, _) = cache(max_loras=3, max_cpu_loras=3)
    run_batch(lora, {w0, w1, w2}, 0)
    lora.leave(w2, 4)  # as recent as the batch and last in the walk, but out of it: w2 goes, from both tiers
    assert lora.load(w3, {w0, w1}, 5) == pytest.approx(DISK_MS + COPY_MS)
    assert not lora.must_reload and run_batch(lora, {w0, w1}, 5, set()) == 0.0
    assert lora.enter(w2, 6) and not lora.enter(w3, 6)

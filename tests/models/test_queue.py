import pytest
import torch

from mocokit.models.queue import KeyQueue


def fifo_reference(size, batches):
    """Slow FIFO with a write pointer: entry by entry, wrapping at `size`."""
    slots, ptr = [None] * size, 0
    for batch in batches:
        for row in batch:
            slots[ptr] = row
            ptr = (ptr + 1) % size
    return slots, ptr


@pytest.mark.parametrize("size,batch,steps", [(10, 4, 7), (12, 5, 5), (8, 8, 3), (6, 1, 9), (5, 7, 3)])
def test_enqueue_matches_fifo_reference_and_wraps(size, batch, steps):
    queue = KeyQueue(size, 3)
    initial = queue.keys.clone()
    batches = [torch.randn(batch, 3) for _ in range(steps)]
    for b in batches:
        queue.enqueue_(b)
    slots, ptr = fifo_reference(size, batches)
    assert int(queue.ptr) == ptr
    for i, expected in enumerate(slots):
        torch.testing.assert_close(queue.keys[i], initial[i] if expected is None else expected)


def test_initial_keys_are_unit_vectors():
    queue = KeyQueue(100, 16)
    torch.testing.assert_close(queue.keys.norm(dim=1), torch.ones(100))


def test_queue_and_pointer_are_persistent_state():
    queue = KeyQueue(10, 4)
    queue.enqueue_(torch.randn(3, 4))
    state = queue.state_dict()
    assert set(state) == {"keys", "ptr"}
    restored = KeyQueue(10, 4)
    restored.load_state_dict(state)
    assert int(restored.ptr) == 3 and torch.equal(restored.keys, queue.keys)

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


def test_enqueue_is_staged_in_the_buffer_but_every_reader_sees_it():
    queue = KeyQueue(10, 4)
    initial = queue.keys.clone()
    new = torch.randn(3, 4)
    queue.enqueue_(new)
    assert torch.equal(queue._buffers["keys"], initial)  # not written yet: autograd may still need the old rows
    assert torch.equal(queue.keys[:3], new) and int(queue.ptr) == 3  # reading commits it
    assert torch.equal(queue._buffers["keys"][:3], new)


def test_state_dict_holds_the_staged_keys_and_a_load_discards_them():
    queue = KeyQueue(10, 4)
    new = torch.randn(4, 4)
    queue.enqueue_(new)
    state = {k: v.clone() for k, v in queue.state_dict().items()}  # a checkpoint taken with keys still staged
    assert torch.equal(state["keys"][:4], new) and int(state["ptr"]) == 4
    other = KeyQueue(10, 4)
    other.enqueue_(torch.randn(2, 4))  # staged, then overwritten by the load
    other.load_state_dict(state)
    assert int(other.ptr) == 4 and torch.equal(other.keys, state["keys"])


def test_the_loss_reads_the_queue_buffer_itself_and_its_gradient_is_that_of_the_old_queue():
    queue = KeyQueue(6, 3)
    old = queue.keys.clone()
    q = torch.randn(2, 3, requires_grad=True)
    negatives = queue.negatives()
    assert negatives.data_ptr() == queue._buffers["keys"].data_ptr()  # no copy
    (q @ negatives.T).square().sum().backward()
    queue.enqueue_(torch.randn(2, 3))  # staged after the forward, written after the backward
    expected = 2 * (q.detach() @ old.T) @ old  # d/dq of sum((q Kᵀ)²) with the old queue
    torch.testing.assert_close(q.grad, expected)
    assert not torch.equal(queue.keys, old)


def test_reading_the_queue_between_forward_and_backward_is_an_autograd_error_not_a_silent_one():
    queue = KeyQueue(6, 3)
    q = torch.randn(2, 3, requires_grad=True)
    loss = (q @ queue.negatives().T).square().sum()
    queue.enqueue_(torch.randn(2, 3))
    queue.commit_()  # what reading `queue.keys` here would do
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()

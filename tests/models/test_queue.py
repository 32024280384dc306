import pytest
import torch
import torch.nn.functional as F

from mocokit.losses import info_nce_with_queue
from mocokit.models.queue import Queue


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
    queue = Queue(size, 3)
    initial = queue.keys.clone()
    batches = [torch.randn(batch, 3) for _ in range(steps)]
    for b in batches:
        queue.enqueue_(b)
        queue.end_step()
    slots, ptr = fifo_reference(size, batches)
    assert int(queue.ptr) == ptr
    for i, expected in enumerate(slots):
        torch.testing.assert_close(queue.keys[i], initial[i] if expected is None else expected)


def test_initial_keys_are_unit_vectors():
    queue = Queue(100, 16)
    torch.testing.assert_close(queue.keys.norm(dim=1), torch.ones(100))


def test_queue_and_pointer_are_persistent_state():
    queue = Queue(10, 4)
    queue.enqueue_(torch.randn(3, 4))
    queue.end_step()
    state = queue.state_dict()
    assert set(state) == {"keys", "ptr", "ids"}
    restored = Queue(10, 4)
    restored.load_state_dict(state)
    assert int(restored.ptr) == 3 and torch.equal(restored.keys, queue.keys)


def test_enqueued_keys_are_written_by_end_step_only_and_a_discarded_step_writes_nothing():
    queue = Queue(10, 4)
    initial = queue.keys.clone()
    new = torch.randn(3, 4)
    queue.enqueue_(new)
    assert torch.equal(queue.keys, initial) and int(queue.ptr) == 0  # autograd may still need the old rows
    assert torch.equal(queue.state_dict()["keys"], initial)  # reading the state writes nothing either
    queue.end_step()
    assert torch.equal(queue.keys[:3], new) and torch.equal(queue.keys[3:], initial[3:]) and int(queue.ptr) == 3
    queue.enqueue_(torch.randn(2, 4))
    queue.discard_step()
    queue.end_step()
    assert int(queue.ptr) == 3 and torch.equal(queue.keys[:3], new)


def test_several_forwards_before_one_end_step_are_written_in_order():
    """Gradient accumulation: every micro-batch saw the queue as it was; their keys then enter as a FIFO would."""
    queue = Queue(7, 2)
    initial = queue.keys.clone()
    batches = [torch.randn(3, 2), torch.randn(3, 2)]
    for b in batches:
        queue.enqueue_(b)
    assert torch.equal(queue.keys, initial)
    queue.end_step()
    slots, ptr = fifo_reference(7, batches)
    assert int(queue.ptr) == ptr
    for i, expected in enumerate(slots):
        torch.testing.assert_close(queue.keys[i], initial[i] if expected is None else expected)


def test_forgetting_end_step_is_an_error_before_the_staged_keys_outgrow_the_queue():
    queue = Queue(8, 2)
    for _ in range(2):
        queue.enqueue_(torch.randn(4, 2))
    with pytest.raises(RuntimeError, match="end_step"):
        queue.enqueue_(torch.randn(4, 2))


def test_a_load_discards_staged_keys():
    queue = Queue(10, 4)
    queue.enqueue_(torch.randn(4, 4))
    queue.end_step()
    state = {k: v.clone() for k, v in queue.state_dict().items()}
    other = Queue(10, 4)
    other.enqueue_(torch.randn(2, 4))  # staged, then dropped by the load
    other.load_state_dict(state)
    other.end_step()
    assert int(other.ptr) == 4 and torch.equal(other.keys, state["keys"])


def test_the_logits_read_the_queue_buffer_itself_and_the_gradient_is_that_of_the_old_queue():
    queue = Queue(6, 3)
    old = queue.keys.clone()
    q = torch.randn(2, 3, requires_grad=True)
    logits, targets = queue.logits(q, torch.zeros(2, 3), temperature=1.0)  # N×(1+K): [q·k⁺, q·queueᵀ]
    torch.testing.assert_close(logits[:, 1:], q.detach() @ old.T)
    assert torch.equal(targets, torch.zeros(2, dtype=torch.long))
    logits[:, 1:].square().sum().backward()
    queue.enqueue_(torch.randn(2, 3))  # staged after the forward, written after the backward
    queue.end_step()
    expected = 2 * (q.detach() @ old.T) @ old  # d/dq of sum((q Kᵀ)²) with the old queue
    torch.testing.assert_close(q.grad, expected)
    assert not torch.equal(queue.keys, old)


def test_writing_the_queue_between_forward_and_backward_is_an_autograd_error_not_a_silent_one():
    queue = Queue(6, 3)
    q = torch.randn(2, 3, requires_grad=True)
    logits, _ = queue.logits(q, torch.zeros(2, 3), temperature=1.0)
    queue.enqueue_(torch.randn(2, 3))
    queue.end_step()  # too early: before the backward
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        logits.square().sum().backward()


def test_each_key_keeps_its_images_index_through_wraps_and_checkpoints():
    queue = Queue(7, 2)
    batches = [(torch.randn(3, 2), torch.arange(3) + 10 * step) for step in range(4)]  # 12 keys, wrapping at 7
    for keys, ids in batches:
        queue.enqueue_(keys, ids)
        queue.end_step()
    key_slots, ptr = fifo_reference(7, [keys for keys, _ in batches])
    id_slots, _ = fifo_reference(7, [ids for _, ids in batches])
    assert int(queue.ptr) == ptr
    for i in range(7):
        torch.testing.assert_close(queue.keys[i], key_slots[i])
        assert int(queue.ids[i]) == int(id_slots[i])
    restored = Queue(7, 2)
    restored.load_state_dict(queue.state_dict())
    assert torch.equal(restored.ids, queue.ids)


def test_a_checkpoint_from_before_identities_loads_with_unknown_ones():
    queue = Queue(5, 2)
    old_state = {"keys": torch.randn(5, 2), "ptr": torch.tensor(3)}  # what earlier versions saved
    queue.load_state_dict(old_state)
    assert torch.equal(queue.keys, old_state["keys"]) and int(queue.ptr) == 3
    assert torch.equal(queue.ids, torch.full((5,), -1))


def test_masking_a_slot_equals_removing_it_from_the_queue():
    """Own-key masking: the loss (and its gradient) of queries whose image has keys in the queue is that of the
    same queue with those slots taken out, built by hand."""
    queue = Queue(6, 4, mask_own_keys=True)
    keys = F.normalize(torch.randn(6, 4, dtype=torch.float64), dim=1)
    queue.keys = keys.clone()
    queue.ids = torch.tensor([5, 1, 9, 5, 2, 7])
    indices = torch.tensor([5, 2, 3])  # image 5 has two stale keys, image 2 one, image 3 none
    q = F.normalize(torch.randn(3, 4, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(3, 4, dtype=torch.float64), dim=1)
    queue._own = indices[:, None] == queue.ids[None, :]
    logits, targets = queue.logits(q, k, temperature=0.1)
    for i, image in enumerate(indices.tolist()):
        kept = keys[queue.ids != image]
        expected = info_nce_with_queue(q[i:i + 1], k[i:i + 1], kept, 0.1)[0]
        torch.testing.assert_close(F.cross_entropy(logits[i:i + 1], targets[i:i + 1]), expected)
    assert queue.step_stats()["own_key_rate"].item() == pytest.approx(2 / 3)
